//! The MySQL/MariaDB sidecar backend: the node's data lives in its own
//! MySQL or MariaDB server, and writes replicate as statements.
//!
//! The leader runs each request's statements in the open batch's MySQL
//! transaction (a savepoint per request), fixing what would make them run
//! differently elsewhere: the session clock (`SET timestamp`), the seeds
//! RAND() draws from (from the log index), the first AUTO_INCREMENT value
//! (`SET insert_id`), `sql_mode`, `time_zone` and the character set. The
//! entry carries each statement's text with that context and what it did
//! (rows affected, last insert id); every other replica runs the same
//! statements in log order on its one applier connection, in one
//! transaction that also records the applied index, and stops with a
//! divergence error if a statement does something else there. The
//! parser ([`refuse`]) keeps out what could still differ.
//!
//! MySQL commits implicitly around schema changes, so those cannot wait in
//! an open batch: a schema change is an entry of its own, run by every
//! replica (the leader too) when it commits, and its client is answered
//! with what it did on the leader. It cannot commit with the applied
//! index; a mark written before it and the schema's digest tell after a
//! crash whether it ran.

pub mod local;
pub(crate) mod refuse;
mod snapshot;
mod values;

pub use snapshot::Taker as MysqlSnapshotTaker;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deeb_core::sql::{
    Applied, ApplyError, Clock, ErrorClass, Executed, QueryError, RequestError, SqlError, StatementError, WriteLimits,
};
use deeb_core::{Readers, SnapshotTaker as _, StateMachine};
use deeb_proto::{op, Column, MysqlCheck, MysqlStatement, Op, QueryChunk, Row, Statement, StatementResult, WriteBatch};
use mysql::prelude::Queryable;
use mysql::{Conn, Opts, Params};
use prost::Message as _;

use self::refuse::{Need, Plan};

/// The session settings every statement runs under, on every replica.
pub(crate) const SQL_MODE: &str = "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION";
pub(crate) const TIME_ZONE: &str = "+00:00";
pub(crate) const CHARACTER_SET: &str = "utf8mb4";

/// Idempotency keys are kept this many entries (as the SQLite backend).
const KEY_ENTRIES: u64 = deeb_core::sql::requests::KEY_ENTRIES_MAX;

/// deeb's own tables, beside the client's in the same database.
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS _deeb_state (
        id TINYINT UNSIGNED PRIMARY KEY,
        applied_index BIGINT UNSIGNED NOT NULL,
        applied_term BIGINT UNSIGNED NOT NULL,
        conf_state LONGBLOB NULL,
        ddl_index BIGINT UNSIGNED NOT NULL DEFAULT 0,
        ddl_term BIGINT UNSIGNED NOT NULL DEFAULT 0,
        ddl_schema BIGINT UNSIGNED NOT NULL DEFAULT 0,
        ddl_key VARBINARY(255) NULL,
        installing TINYINT NOT NULL DEFAULT 0
    ) ENGINE=InnoDB",
    "INSERT IGNORE INTO _deeb_state (id, applied_index, applied_term) VALUES (1, 0, 0)",
    "CREATE TABLE IF NOT EXISTS _deeb_members (
        id BIGINT UNSIGNED PRIMARY KEY,
        address VARBINARY(1024) NOT NULL
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS _deeb_requests (
        request_key VARBINARY(255) PRIMARY KEY,
        entry_index BIGINT UNSIGNED NOT NULL,
        results LONGBLOB NOT NULL,
        KEY (entry_index)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS _deeb_objects (
        name VARBINARY(255) PRIMARY KEY,
        definition LONGBLOB NOT NULL
    ) ENGINE=InnoDB",
];

/// `_deeb_state`'s mark of a schema change: its entry (index, term), the
/// schema's digest before it, its idempotency key, and the applied index.
type SchemaChangeMark = (u64, u64, u64, Option<Vec<u8>>, u64);

/// What the leader's requests did, request by request.
type Outcomes = Vec<Result<Vec<StatementResult>, RequestError>>;

fn sql_error(error: mysql::Error) -> SqlError {
    SqlError::Other(format!("mysql: {error}"))
}

/// Quotes an identifier for MySQL.
pub(crate) fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Opens a connection with deeb's session settings.
pub(crate) fn connect(opts: &Opts) -> Result<Conn, SqlError> {
    connect_checked(opts).map_err(sql_error)
}

/// Connects, waiting while the server cannot be reached (it is starting,
/// stopped, or the network is down), logging why every half minute. A
/// server that answers with an error (access denied, no such database) is
/// not waited for.
fn wait_for_server(opts: &Opts) -> Result<Conn, SqlError> {
    const LOG_EVERY: u32 = 30;
    let mut attempts = 0u32;
    loop {
        match connect_checked(opts) {
            Ok(conn) => return Ok(conn),
            Err(error @ mysql::Error::MySqlError(_)) => return Err(sql_error(error)),
            Err(error) => {
                if attempts.is_multiple_of(LOG_EVERY) {
                    tracing::warn!(%error, "the node's MySQL server cannot be reached: nothing is applied until it is");
                }
                attempts = attempts.wrapping_add(1);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// [`connect`], keeping MySQL's own error.
fn connect_checked(opts: &Opts) -> Result<Conn, mysql::Error> {
    let mut conn = Conn::new(opts.clone())?;
    conn.query_drop(format!(
        "SET SESSION sql_mode = '{SQL_MODE}', time_zone = '{TIME_ZONE}', NAMES {CHARACTER_SET}, \
         auto_increment_increment = 1, auto_increment_offset = 1, foreign_key_checks = 1, autocommit = 1"
    ))?;
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")?;
    Ok(conn)
}

/// A replica's digest of every table as of one entry (see
/// [`deeb_proto::MysqlCheck`]), computed on a read connection of its own in
/// a consistent read opened right after that entry committed.
enum Check {
    Running(std::thread::JoinHandle<Result<u64, String>>),
    Done(Result<u64, String>),
}

impl Check {
    /// The digest, waiting for it if `wait`.
    fn result(&mut self, wait: bool) -> Option<&Result<u64, String>> {
        if let Check::Running(handle) = self {
            if !wait && !handle.is_finished() {
                return None;
            }
            let Check::Running(handle) = std::mem::replace(self, Check::Done(Err(String::new()))) else {
                unreachable!("matched above")
            };
            *self = Check::Done(handle.join().unwrap_or_else(|_| Err("the digest thread panicked".into())));
        }
        match self {
            Check::Done(result) => Some(result),
            Check::Running(_) => None,
        }
    }
}

/// The leader's open batch.
struct Batch {
    next_index: u64,
    /// Requests run in it so far (numbers the random seeds).
    requests: u64,
    /// The session clock of every statement in it.
    timestamp_us: i64,
    /// Idempotency keys recorded in it (readers do not see them yet).
    keys: HashMap<String, Vec<StatementResult>>,
    /// The leader's digest for an earlier check entry, to carry in the
    /// first write that runs; `included` once it is in one.
    check: Option<MysqlCheck>,
    included: Option<u64>,
}

/// What one statement did.
#[derive(Default)]
struct Ran {
    rows_affected: u64,
    last_insert_id: u64,
    columns: Vec<Column>,
    rows: Vec<Row>,
}

/// Why a statement failed: MySQL said no (the client's error), or the
/// connection or server failed (the node's).
enum Failure {
    Statement(StatementError),
    Server(SqlError),
}

impl From<mysql::Error> for Failure {
    fn from(error: mysql::Error) -> Self {
        match error {
            mysql::Error::MySqlError(error) => Failure::Statement(statement_error(&error)),
            other => Failure::Server(sql_error(other)),
        }
    }
}

/// A MySQL error as the client's statement error, classed by its code.
fn statement_error(error: &mysql::MySqlError) -> StatementError {
    let class = match error.code {
        // Duplicate key, foreign keys, NOT NULL, CHECK, SIGNAL.
        1062 | 1216 | 1217 | 1451 | 1452 | 1048 | 1364 | 3819 | 4025 | 1644 => ErrorClass::Constraint,
        // max_statement_time (MariaDB), max_execution_time (MySQL).
        1969 | 3024 => ErrorClass::Timeout,
        _ => ErrorClass::Sql,
    };
    StatementError {
        class,
        sqlite_code: None,
        message: format!("mysql error {} ({}): {}", error.code, error.state, error.message),
    }
}

fn refused(statement_index: usize, message: String) -> RequestError {
    RequestError { statement_index, class: ErrorClass::Refused, sqlite_code: None, message }
}

/// The seeds RAND() draws from for one statement: from its place in the
/// log, so every replica draws the same numbers.
fn seeds(index: u64, request: u64, statement: usize) -> (u64, u64) {
    let mut hash = Fnv::new();
    hash.write(&index.to_le_bytes());
    hash.write(&request.to_le_bytes());
    hash.write(&(statement as u64).to_le_bytes());
    let mixed = hash.finish();
    (mixed & 0x3fff_ffff, (mixed >> 32) & 0x3fff_ffff)
}

/// 64-bit FNV-1a, for digests that must be equal across processes and
/// builds (std's hasher promises neither).
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// Writes a length first, so that fields cannot run into each other.
    pub(crate) fn field(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

/// Runs one replicated statement with its context on `conn`; collects the
/// rows it returns if `rows_bytes_max` is given (and fails past it).
fn run_statement(conn: &mut Conn, statement: &MysqlStatement, rows_bytes_max: Option<usize>) -> Result<Ran, Failure> {
    let micros = statement.timestamp_us;
    let mut context = format!(
        "SET sql_mode = '{}', time_zone = '{}', NAMES {}, timestamp = {}.{:06}, rand_seed1 = {}, rand_seed2 = {}",
        statement.sql_mode.replace('\'', ""),
        statement.time_zone.replace('\'', ""),
        quote(&statement.character_set),
        micros.div_euclid(1_000_000),
        micros.rem_euclid(1_000_000),
        statement.rand_seed1,
        statement.rand_seed2,
    );
    if statement.insert_id != 0 {
        context.push_str(&format!(", insert_id = {}", statement.insert_id));
    }
    conn.query_drop(context)?;
    if statement.params.is_empty() {
        read_result(conn.query_iter(&statement.sql)?, rows_bytes_max)
    } else {
        let params = Params::Positional(statement.params.iter().map(values::from_proto).collect());
        read_result(conn.exec_iter(&statement.sql, params)?, rows_bytes_max)
    }
}

/// What a statement did, from its result (text or binary protocol); the
/// rows it returned too if `rows_bytes_max` is given (and fails past it).
fn read_result<P: mysql::prelude::Protocol>(
    mut result: mysql::QueryResult<'_, '_, '_, P>,
    rows_bytes_max: Option<usize>,
) -> Result<Ran, Failure> {
    // What a statement without rows did is in its OK packet, which the
    // result holds before it is iterated.
    let mut ran = Ran {
        rows_affected: result.affected_rows(),
        last_insert_id: result.last_insert_id().unwrap_or(0),
        ..Ran::default()
    };
    let columns: Vec<mysql::Column> = result.columns().as_ref().to_vec();
    ran.columns = columns.iter().map(column).collect();
    let Some(set) = result.iter() else { return Ok(ran) };
    let mut rows_bytes = 0;
    for row in set {
        let row = row?;
        let Some(bytes_max) = rows_bytes_max else { continue };
        let values = row.unwrap().into_iter().zip(&columns).map(|(value, column)| values::to_proto(value, column));
        let row = Row { values: values.collect() };
        rows_bytes += row.encoded_len();
        if rows_bytes > bytes_max {
            return Err(Failure::Statement(StatementError {
                class: ErrorClass::Limit,
                sqlite_code: None,
                message: format!("the rows the statement returns exceed {bytes_max} bytes"),
            }));
        }
        ran.rows.push(row);
    }
    Ok(ran)
}

fn column(column: &mysql::Column) -> Column {
    Column { name: column.name_str().into_owned(), declared_type: type_name(column).to_owned() }
}

/// The SQL name of a column's type, as MySQL's DDL spells it.
fn type_name(column: &mysql::Column) -> &'static str {
    use mysql::consts::ColumnType as T;
    let binary = column.character_set() == 63;
    match column.column_type() {
        T::MYSQL_TYPE_TINY => "tinyint",
        T::MYSQL_TYPE_SHORT => "smallint",
        T::MYSQL_TYPE_INT24 => "mediumint",
        T::MYSQL_TYPE_LONG => "int",
        T::MYSQL_TYPE_LONGLONG => "bigint",
        T::MYSQL_TYPE_FLOAT => "float",
        T::MYSQL_TYPE_DOUBLE => "double",
        T::MYSQL_TYPE_DECIMAL | T::MYSQL_TYPE_NEWDECIMAL => "decimal",
        T::MYSQL_TYPE_DATE | T::MYSQL_TYPE_NEWDATE => "date",
        T::MYSQL_TYPE_DATETIME | T::MYSQL_TYPE_DATETIME2 => "datetime",
        T::MYSQL_TYPE_TIMESTAMP | T::MYSQL_TYPE_TIMESTAMP2 => "timestamp",
        T::MYSQL_TYPE_TIME | T::MYSQL_TYPE_TIME2 => "time",
        T::MYSQL_TYPE_YEAR => "year",
        T::MYSQL_TYPE_BIT => "bit",
        T::MYSQL_TYPE_JSON => "json",
        T::MYSQL_TYPE_ENUM => "enum",
        T::MYSQL_TYPE_SET => "set",
        T::MYSQL_TYPE_GEOMETRY => "geometry",
        T::MYSQL_TYPE_VARCHAR | T::MYSQL_TYPE_VAR_STRING if binary => "varbinary",
        T::MYSQL_TYPE_VARCHAR | T::MYSQL_TYPE_VAR_STRING => "varchar",
        T::MYSQL_TYPE_STRING if binary => "binary",
        T::MYSQL_TYPE_STRING => "char",
        T::MYSQL_TYPE_TINY_BLOB | T::MYSQL_TYPE_MEDIUM_BLOB | T::MYSQL_TYPE_LONG_BLOB | T::MYSQL_TYPE_BLOB
            if binary =>
        {
            "blob"
        }
        T::MYSQL_TYPE_TINY_BLOB | T::MYSQL_TYPE_MEDIUM_BLOB | T::MYSQL_TYPE_LONG_BLOB | T::MYSQL_TYPE_BLOB => "text",
        T::MYSQL_TYPE_NULL => "null",
        _ => "",
    }
}

/// What deeb knows of the schema to check statements: each table's
/// primary key columns and unique keys, and which function names are
/// builtins. Forgotten after every schema change.
#[derive(Default)]
struct Schema {
    keys: HashMap<String, Keys>,
    builtins: HashMap<String, bool>,
}

#[derive(Clone)]
struct Keys {
    primary: Vec<String>,
    unique: usize,
}

/// The MySQL backend's state machine: one applier connection (the batch's
/// transaction), readers on their own connections.
pub struct MysqlStateMachine {
    opts: Opts,
    conn: Conn,
    applied: Applied,
    limits: WriteLimits,
    batch: Option<Batch>,
    outcomes: Option<Outcomes>,
    schema: Schema,
    readers: MysqlReaders,
    /// Digest every table as of each entry whose index is a multiple of
    /// this (0: never).
    check_every: u64,
    checks: std::collections::BTreeMap<u64, Check>,
    /// The newest check entry whose digest this node (as leader) has
    /// carried in an entry.
    check_sent: u64,
    /// The applier session has the leader's statement deadline on (only
    /// while the leader runs a batch: a replica never cuts short a statement
    /// the leader ran to its end).
    deadline_on: bool,
}

impl MysqlStateMachine {
    /// Connects to the node's MySQL server (the database named in `url`),
    /// checks its settings, creates deeb's tables if missing and settles a
    /// schema change or snapshot install a crash interrupted.
    ///
    /// # Errors
    /// The server cannot be reached, or a setting deeb needs is off.
    pub fn open(url: &str) -> Result<Self, SqlError> {
        let opts = Opts::from_url(url).map_err(|error| SqlError::Other(format!("--mysql-url: {error}")))?;
        if opts.get_db_name().is_none_or(str::is_empty) {
            return Err(SqlError::Other("--mysql-url names no database (mysql://USER:PASS@HOST:PORT/DB)".into()));
        }
        let mut conn = wait_for_server(&opts)?;
        let (lock_mode, flush): (Option<u64>, Option<u64>) = conn
            .query_first("SELECT @@innodb_autoinc_lock_mode, @@innodb_flush_log_at_trx_commit")
            .map_err(sql_error)?
            .unwrap_or((None, None));
        if lock_mode == Some(2) {
            return Err(SqlError::Other(
                "innodb_autoinc_lock_mode = 2 numbers concurrent inserts unpredictably; deeb needs 0 or 1".into(),
            ));
        }
        if flush != Some(1) {
            return Err(SqlError::Other(
                "innodb_flush_log_at_trx_commit must be 1: deeb compacts its log once MySQL has committed".into(),
            ));
        }
        for statement in SCHEMA {
            conn.query_drop(statement).map_err(sql_error)?;
        }
        let readers = MysqlReaders { opts: opts.clone(), idle: Arc::new(Mutex::new(Vec::new())) };
        let mut sm = MysqlStateMachine {
            opts,
            conn,
            applied: Applied::default(),
            limits: WriteLimits::default(),
            batch: None,
            outcomes: None,
            schema: Schema::default(),
            readers,
            check_every: 0,
            checks: std::collections::BTreeMap::new(),
            check_sent: 0,
            deadline_on: false,
        };
        snapshot::finish_install(&mut sm.conn)?;
        sm.settle_schema_change()?;
        sm.applied = sm.read_applied()?;
        Ok(sm)
    }

    /// Digests every table as of each entry whose index is a multiple of
    /// `entries` (0: never), and compares the leader's digests with its own.
    pub fn set_check_interval(&mut self, entries: u64) {
        self.check_every = entries;
    }

    /// Starts digesting the state as of `index` (just committed), off the
    /// applier, if `index` is a check entry.
    fn start_check(&mut self, index: u64) -> Result<(), SqlError> {
        if self.check_every == 0 || !index.is_multiple_of(self.check_every) {
            return Ok(());
        }
        // One digest at a time (each reads every table): a check entry
        // reached while the last is still running is skipped.
        if self.checks.values().any(|check| matches!(check, Check::Running(handle) if !handle.is_finished())) {
            tracing::debug!(entry = index, "the last digest is still running: no check at this entry");
            return Ok(());
        }
        let mut conn = self.readers.connection()?;
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT").map_err(sql_error)?;
        let handle = std::thread::spawn(move || {
            let digest = data_digest(&mut conn).map_err(|error| error.to_string());
            // Not back to the pool: reading whole tables grew its buffers.
            conn.discard();
            digest
        });
        self.checks.insert(index, Check::Running(handle));
        let keep_from = index.saturating_sub(self.check_every.saturating_mul(3));
        self.checks = self.checks.split_off(&keep_from);
        Ok(())
    }

    /// The leader's next digest to carry: the newest check entry not yet
    /// carried whose digest is ready.
    fn check_to_send(&mut self) -> Option<MysqlCheck> {
        let sent = self.check_sent;
        let (index, check) = self.checks.range_mut(sent + 1..).next_back()?;
        match check.result(false)? {
            Ok(digest) => Some(MysqlCheck { index: *index, digest: *digest }),
            Err(_) => None,
        }
    }

    /// Compares the leader's digest with this replica's own, if it has one
    /// (it has none for entries a snapshot jumped over or from before a
    /// restart).
    fn compare_check(&mut self, leader: &MysqlCheck, index: u64) -> Result<(), ApplyError> {
        let Some(own) = self.checks.get_mut(&leader.index).and_then(|check| check.result(true)) else {
            return Ok(());
        };
        match own {
            Ok(digest) if *digest != leader.digest => Err(ApplyError::Divergence {
                index,
                reason: format!(
                    "the digest of every table as of entry {} is {digest:016x} here and {:016x} on the leader: \
                     this replica's data differs",
                    leader.index, leader.digest
                ),
            }),
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::warn!(entry = leader.index, %error, "no digest to compare with the leader's");
                Ok(())
            }
        }
    }

    fn read_applied(&mut self) -> Result<Applied, SqlError> {
        let (index, term): (u64, u64) = self
            .conn
            .query_first("SELECT applied_index, applied_term FROM _deeb_state WHERE id = 1")
            .map_err(sql_error)?
            .ok_or_else(|| SqlError::Other("_deeb_state has no row".into()))?;
        Ok(Applied { index, term })
    }

    /// A crash between a schema change and its applied mark: if the schema
    /// is still as it was before, the change did not run (the entry runs
    /// again); otherwise it did (recorded as applied).
    fn settle_schema_change(&mut self) -> Result<(), SqlError> {
        let row: Option<SchemaChangeMark> = self
            .conn
            .query_first("SELECT ddl_index, ddl_term, ddl_schema, ddl_key, applied_index FROM _deeb_state WHERE id = 1")
            .map_err(sql_error)?;
        let Some((index, term, before, key, applied)) = row else { return Ok(()) };
        if index == 0 {
            return Ok(());
        }
        if index == applied + 1 && schema_digest(&mut self.conn)? != before {
            tracing::warn!(index, "a schema change was interrupted after it ran: recorded as applied");
            if let Some(key) = key {
                let results = encode_results(&[StatementResult::default()]);
                self.conn
                    .exec_drop(
                        "REPLACE INTO _deeb_requests (request_key, entry_index, results) VALUES (?, ?, ?)",
                        (key, index, results),
                    )
                    .map_err(sql_error)?;
            }
            self.conn
                .exec_drop(
                    "UPDATE _deeb_state SET applied_index = ?, applied_term = ?, ddl_index = 0 WHERE id = 1",
                    (index, term),
                )
                .map_err(sql_error)?;
        } else {
            tracing::warn!(index, "a schema change was interrupted before it ran: it runs again");
            self.conn.query_drop("UPDATE _deeb_state SET ddl_index = 0 WHERE id = 1").map_err(sql_error)?;
        }
        Ok(())
    }

    /// Checks a statement's needs against the schema; `Ok(Err(reason))`
    /// refuses it.
    fn check_plan(&mut self, plan: &Plan) -> Result<Result<(), String>, SqlError> {
        for table in &plan.writes {
            match self.keys(table)? {
                Some(keys) if keys.primary.is_empty() => {
                    return Ok(Err(format!(
                        "refused: table {table} has no PRIMARY KEY; deeb replicates only tables with one"
                    )))
                }
                _ => {}
            }
        }
        for need in &plan.needs {
            match need {
                Need::OneUniqueKey { table } => {
                    if self.keys(table)?.is_some_and(|keys| keys.unique > 1) {
                        return Ok(Err(format!(
                            "refused: INSERT ... ON DUPLICATE KEY UPDATE on {table}, which has more than one unique \
                             key, is unsafe for statement replication (which row it updates depends on which key \
                             clashes first)"
                        )));
                    }
                }
                Need::NoAutoIncrement { table } => {
                    if self.has_auto_increment(table)? {
                        return Ok(Err(format!(
                            "refused: a trigger inserting into {table}, which has an AUTO_INCREMENT column, is \
                             unsafe for statement replication (the replicas could number its rows differently)"
                        )));
                    }
                }
                Need::TotalOrder { table, order } => {
                    let total = self.keys(table)?.is_some_and(|keys| {
                        keys.primary.iter().all(|column| order.iter().any(|o| o.eq_ignore_ascii_case(column)))
                    });
                    if !total {
                        return Ok(Err(format!(
                            "refused: UPDATE or DELETE with LIMIT on {table} needs an ORDER BY naming all of its \
                             primary key's columns (otherwise which rows it takes depends on the scan order)"
                        )));
                    }
                }
            }
        }
        for name in &plan.functions {
            if !self.is_builtin(name)? {
                return Ok(Err(format!(
                    "refused: {name}() is a stored or loadable function; deeb cannot check it is deterministic"
                )));
            }
        }
        Ok(Ok(()))
    }

    /// A table's keys (`None`: no such table, MySQL will say so).
    fn keys(&mut self, table: &str) -> Result<Option<Keys>, SqlError> {
        if let Some(keys) = self.schema.keys.get(table) {
            return Ok(Some(keys.clone()));
        }
        // On a connection of its own: information_schema's temporary tables
        // in the batch's transaction would make MySQL refuse its savepoints.
        let mut conn = self.readers.connection()?;
        let rows: Vec<(String, String, u64)> = conn
            .exec(
                "SELECT INDEX_NAME, COLUMN_NAME, NON_UNIQUE FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY INDEX_NAME, SEQ_IN_INDEX",
                (table,),
            )
            .map_err(sql_error)?;
        let exists: Option<u64> = conn
            .exec_first(
                "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                (table,),
            )
            .map_err(sql_error)?;
        if exists.is_none() {
            return Ok(None);
        }
        let primary =
            rows.iter().filter(|(index, ..)| index == "PRIMARY").map(|(_, column, _)| column.clone()).collect();
        let mut unique: Vec<&str> =
            rows.iter().filter(|(.., non_unique)| *non_unique == 0).map(|(index, ..)| index.as_str()).collect();
        unique.dedup();
        let keys = Keys { primary, unique: unique.len() };
        self.schema.keys.insert(table.to_owned(), keys.clone());
        Ok(Some(keys))
    }

    /// True if `table` exists and has an AUTO_INCREMENT column.
    fn has_auto_increment(&mut self, table: &str) -> Result<bool, SqlError> {
        let mut conn = self.readers.connection()?;
        let found: Option<u64> = conn
            .exec_first(
                "SELECT 1 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? \
                 AND EXTRA LIKE '%auto_increment%'",
                (table,),
            )
            .map_err(sql_error)?;
        Ok(found.is_some())
    }

    /// True unless `name` is a stored function or a loadable one.
    fn is_builtin(&mut self, name: &str) -> Result<bool, SqlError> {
        let lower = name.to_ascii_lowercase();
        if let Some(builtin) = self.schema.builtins.get(&lower) {
            return Ok(*builtin);
        }
        let mut conn = self.readers.connection()?;
        let stored: Option<u64> = conn
            .exec_first(
                "SELECT 1 FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE() AND ROUTINE_NAME = ?",
                (name,),
            )
            .map_err(sql_error)?;
        // Loadable functions (mysql.func) may be unreadable: then the name
        // is refused only if it is stored.
        let loadable: Option<u64> = conn.exec_first("SELECT 1 FROM mysql.func WHERE name = ?", (name,)).unwrap_or(None);
        let builtin = stored.is_none() && loadable.is_none();
        self.schema.builtins.insert(lower, builtin);
        Ok(builtin)
    }

    /// MySQL's own error for a statement the parser could not read, if
    /// preparing it (which runs nothing) fails: a syntax error is the
    /// client's, not a refusal.
    fn syntax_error(&self, at: usize, sql: &str) -> Option<RequestError> {
        let mut conn = self.readers.connection().ok()?;
        match conn.prep(sql) {
            Ok(prepared) => {
                let _ = conn.close(prepared);
                None
            }
            Err(mysql::Error::MySqlError(error)) if error.code == 1064 => {
                Some(RequestError::new(at, statement_error(&error)))
            }
            Err(_) => None,
        }
    }

    /// The statement as replicated, with the context it runs under.
    fn replicated(statement: &Statement, batch: &Batch, at: usize) -> MysqlStatement {
        let (rand_seed1, rand_seed2) = seeds(batch.next_index, batch.requests, at);
        MysqlStatement {
            sql: statement.sql.clone(),
            params: statement.params.clone(),
            timestamp_us: batch.timestamp_us,
            rand_seed1,
            rand_seed2,
            sql_mode: SQL_MODE.into(),
            time_zone: TIME_ZONE.into(),
            character_set: CHARACTER_SET.into(),
            ..MysqlStatement::default()
        }
    }

    /// Runs a request's statements under a savepoint; on a statement's
    /// error rolls back to it. The outer error is the server's.
    fn run_request(&mut self, statements: &[Statement]) -> Result<Result<Executed, RequestError>, SqlError> {
        let Some(batch) = self.batch.as_ref() else {
            return Err(SqlError::Other("execute_request without an open batch".into()));
        };
        let replicated: Vec<MysqlStatement> =
            statements.iter().enumerate().map(|(at, statement)| Self::replicated(statement, batch, at)).collect();
        self.conn.query_drop("SAVEPOINT deeb_request; SET last_insert_id = 0").map_err(sql_error)?;
        let (mut ops, mut results) = (Vec::new(), Vec::new());
        for (at, mut statement) in replicated.into_iter().enumerate() {
            match run_statement(&mut self.conn, &statement, Some(self.limits.row_changes_bytes_max)) {
                Ok(ran) => {
                    statement.checked = true;
                    (statement.rows_affected, statement.last_insert_id) = (ran.rows_affected, ran.last_insert_id);
                    statement.insert_id = ran.last_insert_id;
                    ops.push(Op { kind: Some(op::Kind::Mysql(statement)) });
                    results.push(StatementResult {
                        rows_affected: ran.rows_affected,
                        last_insert_id: i64::try_from(ran.last_insert_id).unwrap_or(i64::MAX),
                        columns: ran.columns,
                        rows: ran.rows,
                    });
                }
                Err(Failure::Server(error)) => return Err(error),
                Err(Failure::Statement(error)) => {
                    if self.conn.query_drop("ROLLBACK TO SAVEPOINT deeb_request").is_err() {
                        // MySQL rolled the whole transaction back (a
                        // deadlock, a lock wait): the batch is gone.
                        self.conn.query_drop("ROLLBACK").map_err(sql_error)?;
                        self.batch = None;
                    }
                    return Ok(Err(RequestError::new(at, error)));
                }
            }
        }
        self.conn.query_drop("RELEASE SAVEPOINT deeb_request").map_err(sql_error)?;
        if let Some(batch) = self.batch.as_mut() {
            batch.requests += 1;
        }
        Ok(Ok(Executed { ops, results }))
    }

    /// Applies one write's statements in the open transaction, checking
    /// each against what it did on the leader.
    fn apply_write(&mut self, write: &deeb_proto::Write, index: u64) -> Result<(), ApplyError> {
        let divergence = |reason: String| ApplyError::Divergence { index, reason };
        if write.restore.is_some() {
            return Err(divergence("a restore piece: the MySQL backend takes no SQLite restores".into()));
        }
        self.conn.query_drop("SAVEPOINT deeb_request; SET last_insert_id = 0").map_err(sql_error)?;
        for (at, op) in write.ops.iter().enumerate() {
            let statement = match &op.kind {
                Some(op::Kind::Mysql(statement)) => statement,
                Some(op::Kind::MysqlCheck(check)) => {
                    self.compare_check(check, index)?;
                    continue;
                }
                _ => return Err(divergence(format!("op {at} is not a MySQL statement (a SQLite entry?)"))),
            };
            match run_statement(&mut self.conn, statement, None) {
                Ok(ran) if !statement.checked => drop(ran),
                Ok(ran)
                    if (ran.rows_affected, ran.last_insert_id)
                        == (statement.rows_affected, statement.last_insert_id) => {}
                Ok(ran) => {
                    return Err(divergence(format!(
                        "statement {at} ({:?}) affected {} rows with last insert id {} here, {} rows with {} on the \
                         leader: this replica's data differs",
                        statement.sql,
                        ran.rows_affected,
                        ran.last_insert_id,
                        statement.rows_affected,
                        statement.last_insert_id
                    )))
                }
                Err(Failure::Server(error)) => return Err(ApplyError::Sql(error)),
                Err(Failure::Statement(error)) => {
                    return Err(divergence(format!(
                        "statement {at} ({:?}) failed here but not on the leader: {}",
                        statement.sql, error.message
                    )))
                }
            }
        }
        self.conn.query_drop("RELEASE SAVEPOINT deeb_request").map_err(sql_error)?;
        if !write.idempotency_key.is_empty() {
            self.record(&write.idempotency_key, index, &write.results)?;
        }
        Ok(())
    }

    /// Runs a schema change (an entry of its own) with its crash mark.
    fn apply_schema_change(
        &mut self,
        write: &deeb_proto::Write,
        statement: &MysqlStatement,
        applied: Applied,
    ) -> Result<(), ApplyError> {
        let before = schema_digest(&mut self.conn)?;
        let key = (!write.idempotency_key.is_empty()).then(|| write.idempotency_key.as_bytes().to_vec());
        self.conn
            .exec_drop(
                "UPDATE _deeb_state SET ddl_index = ?, ddl_term = ?, ddl_schema = ?, ddl_key = ? WHERE id = 1",
                (applied.index, applied.term, before, key),
            )
            .map_err(sql_error)?;
        let outcome = match run_statement(&mut self.conn, statement, None) {
            Ok(ran) => Ok(vec![StatementResult { rows_affected: ran.rows_affected, ..StatementResult::default() }]),
            Err(Failure::Statement(error)) => Err(RequestError::new(0, error)),
            Err(Failure::Server(error)) => return Err(ApplyError::Sql(error)),
        };
        self.schema = Schema::default();
        self.conn.query_drop("START TRANSACTION").map_err(sql_error)?;
        if let Ok(results) = &outcome {
            if !write.idempotency_key.is_empty() {
                self.record(&write.idempotency_key, applied.index, results)?;
            }
        }
        self.finish_entry(applied, ", ddl_index = 0")?;
        self.outcomes = Some(vec![outcome]);
        Ok(())
    }

    /// Applies a committed batch (one try; see [`Self::applying`]).
    fn apply_batch_once(&mut self, batch: &WriteBatch, applied: Applied) -> Result<(), ApplyError> {
        if let [write] = &batch.writes[..] {
            if let [Op { kind: Some(op::Kind::Mysql(statement)) }] = &write.ops[..] {
                if statement.schema_change {
                    return self.apply_schema_change(write, statement, applied);
                }
            }
        }
        self.conn.query_drop("START TRANSACTION").map_err(sql_error)?;
        for write in &batch.writes {
            if let Err(error) = self.apply_write(write, applied.index) {
                let _ = self.conn.query_drop("ROLLBACK");
                return Err(error);
            }
        }
        self.finish_entry(applied, "")?;
        Ok(())
    }

    fn apply_membership_once(
        &mut self,
        applied: Applied,
        conf_state: &[u8],
        members: &[(u64, Option<String>)],
    ) -> Result<(), SqlError> {
        self.conn.query_drop("START TRANSACTION").map_err(sql_error)?;
        self.conn.exec_drop("UPDATE _deeb_state SET conf_state = ? WHERE id = 1", (conf_state,)).map_err(sql_error)?;
        for (id, address) in members {
            match address {
                Some(address) => self
                    .conn
                    .exec_drop("REPLACE INTO _deeb_members (id, address) VALUES (?, ?)", (id, address.as_bytes())),
                None => self.conn.exec_drop("DELETE FROM _deeb_members WHERE id = ?", (id,)),
            }
            .map_err(sql_error)?;
        }
        self.finish_entry(applied, "")
    }

    /// Runs one apply step. If it failed because the connection to MySQL
    /// broke (the server stopped or cannot be reached), waits until MySQL
    /// is back, settles what the break interrupted, and runs the step again
    /// unless it had committed: a node whose MySQL is away applies nothing
    /// (and says so in /readyz) and catches up when it returns.
    fn applying<E: From<SqlError>>(
        &mut self,
        applied: Applied,
        mut step: impl FnMut(&mut Self) -> Result<(), E>,
    ) -> Result<(), E> {
        loop {
            if applied.index <= self.applied.index {
                return Ok(());
            }
            self.set_deadline(false)?;
            match step(self) {
                Err(_) if self.conn.ping().is_err() => self.reconnect()?,
                result => return result,
            }
        }
    }

    /// Waits for MySQL and opens the applier connection again.
    fn reconnect(&mut self) -> Result<(), SqlError> {
        self.batch = None;
        self.conn = wait_for_server(&self.opts)?;
        self.readers.forget_idle();
        self.deadline_on = false;
        snapshot::finish_install(&mut self.conn)?;
        self.settle_schema_change()?;
        self.applied = self.read_applied()?;
        tracing::info!(applied = self.applied.index, "MySQL is back: applying resumes");
        Ok(())
    }

    /// Turns the leader's statement deadline (MariaDB's
    /// `max_statement_time`; MySQL has none for writes) on or off.
    fn set_deadline(&mut self, on: bool) -> Result<(), SqlError> {
        if on == self.deadline_on {
            return Ok(());
        }
        let seconds = if on { self.limits.statement_timeout.as_secs_f64() } else { 0.0 };
        match self.conn.query_drop(format!("SET SESSION max_statement_time = {seconds}")) {
            Ok(()) => {}
            Err(mysql::Error::MySqlError(error)) if error.code == 1193 => {
                tracing::debug!(%error, "no max_statement_time on this server: writes have no deadline");
            }
            Err(error) => return Err(sql_error(error)),
        }
        self.deadline_on = on;
        Ok(())
    }

    /// Records an idempotency key with its results (in the open
    /// transaction).
    fn record(&mut self, key: &str, index: u64, results: &[StatementResult]) -> Result<(), SqlError> {
        self.conn
            .exec_drop(
                "REPLACE INTO _deeb_requests (request_key, entry_index, results) VALUES (?, ?, ?)",
                (key.as_bytes(), index, encode_results(results)),
            )
            .map_err(sql_error)
    }

    /// Records `applied` (and forgets old keys) and commits the open
    /// transaction.
    fn finish_entry(&mut self, applied: Applied, extra: &str) -> Result<(), SqlError> {
        self.conn
            .exec_drop(
                format!("UPDATE _deeb_state SET applied_index = ?, applied_term = ?{extra} WHERE id = 1"),
                (applied.index, applied.term),
            )
            .map_err(sql_error)?;
        if applied.index > KEY_ENTRIES && applied.index.is_multiple_of(64) {
            self.conn
                .exec_drop("DELETE FROM _deeb_requests WHERE entry_index < ?", (applied.index - KEY_ENTRIES,))
                .map_err(sql_error)?;
        }
        self.conn.query_drop("COMMIT").map_err(sql_error)?;
        self.applied = applied;
        if let Err(error) = self.start_check(applied.index) {
            tracing::warn!(entry = applied.index, %error, "no digest of this entry's state to check");
        }
        Ok(())
    }
}

fn encode_results(results: &[StatementResult]) -> Vec<u8> {
    deeb_proto::ExecuteResponse { results: results.to_vec(), ..Default::default() }.encode_to_vec()
}

fn decode_results(bytes: &[u8]) -> Result<Vec<StatementResult>, SqlError> {
    deeb_proto::ExecuteResponse::decode(bytes)
        .map(|response| response.results)
        .map_err(|error| SqlError::Other(format!("a recorded request's results do not decode: {error}")))
}

/// The client's tables (and views), by name, without deeb's.
fn user_tables(conn: &mut Conn) -> Result<Vec<(String, String)>, SqlError> {
    conn.query(
        "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() \
         AND TABLE_NAME NOT LIKE '\\_deeb\\_%' ORDER BY TABLE_NAME",
    )
    .map_err(sql_error)
}

/// `SHOW CREATE TABLE` (or VIEW) without the AUTO_INCREMENT counter, which
/// replicas may hold differently (a failed insert moves it on the leader).
fn create_statement(conn: &mut Conn, table: &str, kind: &str) -> Result<String, SqlError> {
    let view = kind == "VIEW";
    let sql = format!("SHOW CREATE {} {}", if view { "VIEW" } else { "TABLE" }, quote(table));
    let row: Option<mysql::Row> = conn.query_first(sql).map_err(sql_error)?;
    let text: String = row.and_then(|row| row.get(1)).unwrap_or_default();
    Ok(strip_auto_increment(&text))
}

fn strip_auto_increment(text: &str) -> String {
    text.split(' ').filter(|word| !word.starts_with("AUTO_INCREMENT=")).collect::<Vec<_>>().join(" ")
}

/// A digest of the client's schema: tables, views and triggers.
fn schema_digest(conn: &mut Conn) -> Result<u64, SqlError> {
    let mut hash = Fnv::new();
    for (table, kind) in user_tables(conn)? {
        hash.field(table.as_bytes());
        hash.field(create_statement(conn, &table, &kind)?.as_bytes());
    }
    let triggers: Vec<(String, String)> = conn
        .query(
            "SELECT TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS \
             WHERE TRIGGER_SCHEMA = DATABASE() ORDER BY TRIGGER_NAME",
        )
        .map_err(sql_error)?;
    for (name, action) in triggers {
        hash.field(name.as_bytes());
        hash.field(action.as_bytes());
    }
    Ok(hash.finish())
}

/// The primary key's columns of `table` (all columns if it has none), to
/// read it in one order everywhere.
pub(crate) fn order_columns(conn: &mut Conn, table: &str) -> Result<Vec<String>, SqlError> {
    let primary: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
            (table,),
        )
        .map_err(sql_error)?;
    if !primary.is_empty() {
        return Ok(primary);
    }
    conn.exec(
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? \
         ORDER BY ORDINAL_POSITION",
        (table,),
    )
    .map_err(sql_error)
}

/// An ordered digest of every client table and the schema, in the
/// connection's current transaction.
fn data_digest(conn: &mut Conn) -> Result<u64, SqlError> {
    let mut hash = Fnv::new();
    hash.write(&schema_digest(conn)?.to_le_bytes());
    for (table, kind) in user_tables(conn)? {
        if kind != "BASE TABLE" {
            continue;
        }
        hash.field(table.as_bytes());
        let order: Vec<String> = order_columns(conn, &table)?.iter().map(|column| quote(column)).collect();
        let sql = format!("SELECT * FROM {} ORDER BY {}", quote(&table), order.join(", "));
        let mut encoded = Vec::new();
        for row in conn.exec_iter(sql, ()).map_err(sql_error)? {
            encoded.clear();
            for value in row.map_err(sql_error)?.unwrap() {
                values::encode(&value, &mut encoded);
            }
            hash.field(&encoded);
        }
    }
    Ok(hash.finish())
}

fn now_micros() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

impl StateMachine for MysqlStateMachine {
    type Readers = MysqlReaders;
    type Snapshots = snapshot::Taker;

    fn set_limits(&mut self, limits: WriteLimits) {
        self.limits = limits;
    }

    fn set_clock(&mut self, _clock: Clock) {}

    fn applied(&self) -> Applied {
        self.applied
    }

    fn conf_state(&self) -> Result<Option<Vec<u8>>, SqlError> {
        let mut conn = self.readers.connection()?;
        let row: Option<Option<Vec<u8>>> =
            conn.query_first("SELECT conf_state FROM _deeb_state WHERE id = 1").map_err(sql_error)?;
        Ok(row.flatten())
    }

    fn members(&self) -> Result<Vec<(u64, String)>, SqlError> {
        let mut conn = self.readers.connection()?;
        let rows: Vec<(u64, Vec<u8>)> =
            conn.query("SELECT id, address FROM _deeb_members ORDER BY id").map_err(sql_error)?;
        Ok(rows.into_iter().map(|(id, address)| (id, String::from_utf8_lossy(&address).into_owned())).collect())
    }

    fn runs_alone(&self, statements: &[Statement]) -> bool {
        statements.iter().any(|statement| refuse::is_schema_change(&statement.sql))
    }

    fn takes_restores(&self) -> bool {
        false
    }

    fn take_outcomes(&mut self) -> Option<Outcomes> {
        self.outcomes.take()
    }

    fn begin_batch(&mut self, next_index: u64) -> Result<(), SqlError> {
        if self.batch.is_some() {
            return Err(SqlError::Other("begin_batch with a batch open".into()));
        }
        self.set_deadline(true)?;
        self.conn.query_drop("START TRANSACTION").map_err(sql_error)?;
        let check = self.check_to_send();
        let timestamp_us = now_micros();
        self.batch = Some(Batch { next_index, requests: 0, timestamp_us, keys: HashMap::new(), check, included: None });
        Ok(())
    }

    fn execute_request(&mut self, statements: &[Statement]) -> Result<Result<Executed, RequestError>, SqlError> {
        let mut schema_change = false;
        for (at, statement) in statements.iter().enumerate() {
            if !statement.named_params.is_empty() {
                return Ok(Err(refused(at, "refused: MySQL takes positional parameters (?) only".into())));
            }
            let plan = match refuse::check_write(&statement.sql) {
                Ok(plan) => plan,
                Err(refusal) if refuse::parses(&statement.sql) => return Ok(Err(refused(at, refusal))),
                // MySQL says what is wrong with a statement that is not SQL.
                Err(refusal) => return Ok(Err(self.syntax_error(at, &statement.sql).unwrap_or(refused(at, refusal)))),
            };
            if plan.schema_change && statements.len() > 1 {
                return Ok(Err(refused(
                    at,
                    "refused: a schema change must be a request of its own (MySQL commits around it, so it cannot \
                     be atomic with other statements)"
                        .into(),
                )));
            }
            if let Err(refusal) = self.check_plan(&plan)? {
                return Ok(Err(refused(at, refusal)));
            }
            schema_change |= plan.schema_change;
        }
        if schema_change {
            // Runs when its entry commits, on every replica.
            let Some(batch) = self.batch.take() else {
                return Err(SqlError::Other("execute_request without an open batch".into()));
            };
            self.conn.query_drop("ROLLBACK").map_err(sql_error)?;
            let mut statement = Self::replicated(&statements[0], &batch, 0);
            statement.schema_change = true;
            let ops = vec![Op { kind: Some(op::Kind::Mysql(statement)) }];
            return Ok(Ok(Executed { ops, results: vec![StatementResult::default()] }));
        }
        let mut executed = self.run_request(statements)?;
        if let (Ok(executed), Some(batch)) = (&mut executed, self.batch.as_mut()) {
            if let Some(check) = batch.check.take() {
                batch.included = Some(check.index);
                executed.ops.insert(0, Op { kind: Some(op::Kind::MysqlCheck(check)) });
            }
        }
        Ok(executed)
    }

    fn record_request(&mut self, key: &str, results: &[StatementResult]) -> Result<(), SqlError> {
        // A schema change has ended the batch: it records its key itself
        // when it runs.
        let Some(batch) = self.batch.as_mut() else { return Ok(()) };
        batch.keys.insert(key.to_owned(), results.to_vec());
        let index = batch.next_index;
        self.record(key, index, results)
    }

    fn recorded_request(&self, key: &str) -> Result<Option<(u64, Vec<StatementResult>)>, SqlError> {
        if let Some(batch) = &self.batch {
            if let Some(results) = batch.keys.get(key) {
                return Ok(Some((batch.next_index, results.clone())));
            }
        }
        let mut conn = self.readers.connection()?;
        let row: Option<(u64, Vec<u8>)> = conn
            .exec_first("SELECT entry_index, results FROM _deeb_requests WHERE request_key = ?", (key.as_bytes(),))
            .map_err(sql_error)?;
        row.map(|(index, results)| Ok((index, decode_results(&results)?))).transpose()
    }

    fn batch_open(&self) -> bool {
        self.batch.is_some()
    }

    fn batch_time_spent(&self) -> bool {
        false
    }

    fn commit_batch(&mut self, applied: Applied) -> Result<(), SqlError> {
        let Some(batch) = self.batch.take() else {
            return Err(SqlError::Other("commit_batch without an open batch".into()));
        };
        self.check_sent = self.check_sent.max(batch.included.unwrap_or(0));
        self.finish_entry(applied, "")
    }

    fn rollback_batch(&mut self) -> Result<(), SqlError> {
        if self.batch.take().is_some() {
            self.conn.query_drop("ROLLBACK").map_err(sql_error)?;
        }
        Ok(())
    }

    fn apply_batch(&mut self, batch: &WriteBatch, applied: Applied) -> Result<(), ApplyError> {
        self.applying(applied, |sm| sm.apply_batch_once(batch, applied))
    }

    fn apply_empty(&mut self, applied: Applied) -> Result<(), SqlError> {
        self.applying(applied, |sm| {
            sm.conn.query_drop("START TRANSACTION").map_err(sql_error)?;
            sm.finish_entry(applied, "")
        })
    }

    fn apply_membership(
        &mut self,
        applied: Applied,
        conf_state: &[u8],
        members: &[(u64, Option<String>)],
    ) -> Result<(), SqlError> {
        self.applying(applied, |sm| sm.apply_membership_once(applied, conf_state, members))
    }

    fn readers(&self) -> MysqlReaders {
        self.readers.clone()
    }

    fn create_snapshot(&self, dest: &Path) -> Result<Applied, SqlError> {
        Ok(self.snapshot_taker()?.take(dest)?.applied)
    }

    fn snapshot_taker(&self) -> Result<snapshot::Taker, SqlError> {
        Ok(snapshot::Taker { opts: self.opts.clone() })
    }

    fn install_snapshot(&mut self, src: &Path) -> Result<Applied, SqlError> {
        if self.batch.is_some() {
            return Err(SqlError::Other("install_snapshot with a batch open".into()));
        }
        self.set_deadline(false)?;
        snapshot::install(&self.opts, &mut self.conn, src)?;
        self.schema = Schema::default();
        self.applied = self.read_applied()?;
        Ok(self.applied)
    }
}

/// Opens read-only connections to the node's MySQL (pooled).
#[derive(Clone)]
pub struct MysqlReaders {
    opts: Opts,
    idle: Idle,
}

/// Idle read connections, with when each was last used.
type Idle = Arc<Mutex<Vec<(Conn, Instant)>>>;

/// A connection idle longer than this is pinged before use (the server
/// may have restarted meanwhile).
const PING_AFTER: Duration = Duration::from_secs(5);

/// Idle read connections kept.
const READERS_IDLE_MAX: usize = 32;

impl MysqlReaders {
    /// Drops the idle connections (the server went away).
    fn forget_idle(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// A read-only connection, from the pool or new.
    fn connection(&self) -> Result<Pooled, SqlError> {
        loop {
            let idle = self.idle.lock().map(|mut idle| idle.pop()).unwrap_or(None);
            let Some((mut conn, since)) = idle else { break };
            if since.elapsed() < PING_AFTER || conn.ping().is_ok() {
                return Ok(Pooled { conn: Some(conn), idle: self.idle.clone() });
            }
            self.forget_idle();
        }
        let mut conn = connect(&self.opts)?;
        conn.query_drop("SET SESSION TRANSACTION READ ONLY").map_err(sql_error)?;
        Ok(Pooled { conn: Some(conn), idle: self.idle.clone() })
    }
}

/// A read connection, back to the pool when dropped (unless it failed).
pub struct Pooled {
    conn: Option<Conn>,
    idle: Idle,
}

impl std::ops::Deref for Pooled {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("held until dropped")
    }
}

impl Pooled {
    /// Forgets the connection (it failed or was left mid-result).
    fn discard(mut self) {
        self.conn = None;
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let (Some(conn), Ok(mut idle)) = (self.conn.take(), self.idle.lock()) {
            if idle.len() < READERS_IDLE_MAX {
                idle.push((conn, Instant::now()));
            }
        }
    }
}

impl Readers for MysqlReaders {
    type Reader = MysqlReader;

    fn open(&self) -> Result<MysqlReader, SqlError> {
        Ok(MysqlReader { readers: self.clone() })
    }

    fn digest(&self) -> Result<(Applied, u64), SqlError> {
        let mut conn = self.connection()?;
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT").map_err(sql_error)?;
        let (index, term): (u64, u64) = conn
            .query_first("SELECT applied_index, applied_term FROM _deeb_state WHERE id = 1")
            .map_err(sql_error)?
            .unwrap_or((0, 0));
        let digest = data_digest(&mut conn);
        // Not back to the pool: reading whole tables grew its buffers.
        conn.discard();
        Ok((Applied { index, term }, digest?))
    }
}

/// A reader of the node's MySQL: each query on a pooled read-only
/// connection, in its own consistent read.
pub struct MysqlReader {
    readers: MysqlReaders,
}

impl MysqlReader {
    /// Runs a read-only query, sending its rows in chunks of at most
    /// `rows_max` rows and about `bytes_max` bytes as they arrive. `stop`
    /// is asked between rows; `sink` returns false when the client is gone.
    ///
    /// # Errors
    /// Refused (not a read), MySQL's error, or stopped.
    pub fn query_until(
        &self,
        statement: &Statement,
        rows_max: usize,
        bytes_max: usize,
        mut stop: Box<dyn FnMut() -> Option<String> + '_>,
        sink: &mut dyn FnMut(QueryChunk) -> bool,
    ) -> Result<(), QueryError> {
        refuse::check_read(&statement.sql).map_err(QueryError::NotReadOnly)?;
        if !statement.named_params.is_empty() {
            return Err(QueryError::Sql("MySQL takes positional parameters (?) only".into()));
        }
        let mut conn = self.readers.connection().map_err(|error| QueryError::Sql(error.to_string()))?;
        let outcome = stream(&mut conn, statement, rows_max, bytes_max, &mut stop, sink);
        if outcome.is_err() {
            conn.discard();
        }
        outcome
    }
}

fn query_error(error: mysql::Error) -> QueryError {
    match error {
        mysql::Error::MySqlError(error) => QueryError::Sql(statement_error(&error).message),
        other => QueryError::Sql(format!("mysql: {other}")),
    }
}

fn stream(
    conn: &mut Conn,
    statement: &Statement,
    rows_max: usize,
    bytes_max: usize,
    stop: &mut dyn FnMut() -> Option<String>,
    sink: &mut dyn FnMut(QueryChunk) -> bool,
) -> Result<(), QueryError> {
    let params = Params::Positional(statement.params.iter().map(values::from_proto).collect());
    let mut result = match statement.params.is_empty() {
        true => conn.exec_iter(&statement.sql, ()),
        false => conn.exec_iter(&statement.sql, params),
    }
    .map_err(query_error)?;
    let columns: Vec<mysql::Column> = result.columns().as_ref().to_vec();
    let mut chunk = QueryChunk { columns: columns.iter().map(column).collect(), ..QueryChunk::default() };
    let mut bytes = 0;
    if let Some(set) = result.iter() {
        for row in set {
            if let Some(reason) = stop() {
                return Err(QueryError::Stopped(reason));
            }
            let values = row.map_err(query_error)?.unwrap();
            let row = Row { values: values.into_iter().zip(&columns).map(|(v, c)| values::to_proto(v, c)).collect() };
            bytes += row.encoded_len();
            chunk.rows.push(row);
            if chunk.rows.len() >= rows_max || bytes >= bytes_max {
                if !sink(std::mem::take(&mut chunk)) {
                    return Err(QueryError::Stopped("query stopped: the client went away".into()));
                }
                bytes = 0;
            }
        }
    }
    if !chunk.rows.is_empty() || !chunk.columns.is_empty() {
        sink(chunk);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_by_place_and_are_stable() {
        assert_eq!(seeds(7, 1, 2), seeds(7, 1, 2));
        assert_ne!(seeds(7, 1, 2), seeds(7, 2, 2));
        assert_ne!(seeds(7, 1, 2), seeds(8, 1, 2));
        let (a, b) = seeds(1, 0, 0);
        assert!(a < 1 << 30 && b < 1 << 30);
    }

    #[test]
    fn auto_increment_counters_are_left_out_of_schema_text() {
        assert_eq!(
            strip_auto_increment("CREATE TABLE `t` (...) ENGINE=InnoDB AUTO_INCREMENT=7 DEFAULT CHARSET=utf8mb4"),
            "CREATE TABLE `t` (...) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        );
    }
}
