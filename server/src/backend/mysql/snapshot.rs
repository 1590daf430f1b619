//! Snapshots of the MySQL backend: a logical dump taken inside one
//! `START TRANSACTION WITH CONSISTENT SNAPSHOT` at a known applied index,
//! written as it is read (never whole in memory), and installed into a
//! fresh database on the same server that is swapped in with one atomic
//! `RENAME TABLE`. Views and triggers (which cannot move between
//! databases) are recreated after the swap from a table that moves with
//! the data; a crash after the swap finishes that on the next open, a
//! crash before it leaves the old state whole.
//!
//! File: a magic line, then records `[kind u8][length u64 LE][payload]`,
//! ending with an `E` record holding the CRC32C of everything before it.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::time::Duration;

use deeb_core::sql::{Applied, SqlError};
use deeb_core::{SnapshotTaker, TakenSnapshot};
use mysql::prelude::Queryable;
use mysql::{Conn, Opts, Value};

use super::{connect, order_columns, quote, sql_error, user_tables, values, SCHEMA};

const MAGIC: &[u8] = b"deeb mysql snapshot 1\n";
/// Rows loaded per INSERT (and bytes, whichever comes first).
const INSERT_ROWS: usize = 500;
const INSERT_BYTES: usize = 1 << 20;
/// Rows per transaction while loading.
const COMMIT_ROWS: usize = 5_000;
/// Attempts at a consistent read that a concurrent schema change spoiled.
const TAKE_ATTEMPTS: usize = 10;

/// Takes a snapshot on a connection of its own (the node goes on).
pub struct Taker {
    pub(super) opts: Opts,
}

impl SnapshotTaker for Taker {
    fn take(self, dest: &Path) -> Result<TakenSnapshot, SqlError> {
        let mut last = None;
        for attempt in 0..TAKE_ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200 * attempt as u64));
            }
            wait_for_schema_change(&self.opts)?;
            match take_once(&self.opts, dest) {
                // 1412: "Table definition has changed": a schema change
                // ran after the consistent read began.
                Err(Taking::Changed(error)) => last = Some(error),
                Err(Taking::Failed(error)) => return Err(error),
                Ok(taken) => return Ok(taken),
            }
        }
        Err(last.unwrap_or_else(|| SqlError::Other("snapshot not taken".into())))
    }
}

/// How long a snapshot waits for a schema change to finish (MySQL cannot
/// read a table consistently across one).
const SCHEMA_CHANGE_WAIT_MAX: Duration = Duration::from_secs(600);

/// Waits while a schema change is running (marked in `_deeb_state`).
fn wait_for_schema_change(opts: &Opts) -> Result<(), SqlError> {
    let mut conn = connect(opts)?;
    let started = std::time::Instant::now();
    loop {
        let running: Option<u64> =
            conn.query_first("SELECT ddl_index FROM _deeb_state WHERE id = 1").map_err(sql_error)?;
        if running.unwrap_or(0) == 0 {
            return Ok(());
        }
        if started.elapsed() > SCHEMA_CHANGE_WAIT_MAX {
            return Err(SqlError::Other(format!(
                "a schema change has run for over {SCHEMA_CHANGE_WAIT_MAX:?}: no snapshot until it ends"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

enum Taking {
    Changed(SqlError),
    Failed(SqlError),
}

impl From<SqlError> for Taking {
    fn from(error: SqlError) -> Self {
        Taking::Failed(error)
    }
}

impl From<mysql::Error> for Taking {
    fn from(error: mysql::Error) -> Self {
        match &error {
            mysql::Error::MySqlError(mysql_error) if mysql_error.code == 1412 => Taking::Changed(sql_error(error)),
            _ => Taking::Failed(sql_error(error)),
        }
    }
}

impl From<std::io::Error> for Taking {
    fn from(error: std::io::Error) -> Self {
        Taking::Failed(SqlError::Other(format!("snapshot file: {error}")))
    }
}

/// Writes records and sums them.
struct Records<W: Write> {
    out: W,
    crc: u32,
}

impl<W: Write> Records<W> {
    fn put(&mut self, kind: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut head = [0u8; 9];
        head[0] = kind;
        head[1..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        self.crc = crc32c::crc32c_append(self.crc, &head);
        self.crc = crc32c::crc32c_append(self.crc, payload);
        self.out.write_all(&head)?;
        self.out.write_all(payload)
    }
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn take_once(opts: &Opts, dest: &Path) -> Result<TakenSnapshot, Taking> {
    let mut conn = connect(opts)?;
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")?;
    let (index, term, conf_state, schema_change): (u64, u64, Option<Vec<u8>>, u64) = conn
        .query_first("SELECT applied_index, applied_term, conf_state, ddl_index FROM _deeb_state WHERE id = 1")?
        .ok_or_else(|| SqlError::Other("_deeb_state has no row".into()))?;
    if schema_change != 0 {
        // Its effects may be in the tables already, its entry not yet
        // applied: the read would be of no entry.
        return Err(Taking::Changed(SqlError::Other(format!("schema change {schema_change} running"))));
    }
    let file = File::create(dest)?;
    let mut records = Records { out: BufWriter::new(file), crc: 0 };
    records.out.write_all(MAGIC)?;
    records.crc = crc32c::crc32c(MAGIC);
    let mut state = Vec::new();
    state.extend_from_slice(&index.to_le_bytes());
    state.extend_from_slice(&term.to_le_bytes());
    field(&mut state, conf_state.as_deref().unwrap_or_default());
    state.push(u8::from(conf_state.is_some()));
    records.put(b'S', &state)?;
    let mut copied = vec!["_deeb_members".to_owned(), "_deeb_requests".to_owned()];
    let tables = user_tables(&mut conn)?;
    copied.extend(tables.iter().filter(|(_, kind)| kind == "BASE TABLE").map(|(name, _)| name.clone()));
    for table in &copied {
        let create: Option<mysql::Row> = conn.query_first(format!("SHOW CREATE TABLE {}", quote(table)))?;
        let create: String = create.and_then(|row| row.get(1)).unwrap_or_default();
        let mut payload = Vec::new();
        field(&mut payload, table.as_bytes());
        field(&mut payload, create.as_bytes());
        records.put(b'T', &payload)?;
        let order: Vec<String> = order_columns(&mut conn, table)?.iter().map(|column| quote(column)).collect();
        let sql = format!("SELECT * FROM {} ORDER BY {}", quote(table), order.join(", "));
        let mut row_bytes = Vec::new();
        for row in conn.exec_iter(sql, ())? {
            row_bytes.clear();
            for value in row?.unwrap() {
                values::encode(&value, &mut row_bytes);
            }
            records.put(b'R', &row_bytes)?;
        }
    }
    // Views, then triggers: created after the swap, in this order.
    for (name, _) in tables.iter().filter(|(_, kind)| kind == "VIEW") {
        let create: Option<mysql::Row> = conn.query_first(format!("SHOW CREATE VIEW {}", quote(name)))?;
        let create: String = create.and_then(|row| row.get(1)).unwrap_or_default();
        records.put(b'O', strip_definer(&create).as_bytes())?;
    }
    let triggers: Vec<String> = conn.query(
        "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE() \
         ORDER BY ACTION_ORDER, TRIGGER_NAME",
    )?;
    for name in triggers {
        let create: Option<mysql::Row> = conn.query_first(format!("SHOW CREATE TRIGGER {}", quote(&name)))?;
        let create: String = create.and_then(|row| row.get(2)).unwrap_or_default();
        records.put(b'O', strip_definer(&create).as_bytes())?;
    }
    conn.query_drop("COMMIT")?;
    let crc = records.crc;
    records.out.write_all(b"E")?;
    records.out.write_all(&8u64.to_le_bytes())?;
    records.out.write_all(&u64::from(crc).to_le_bytes())?;
    let file = records.out.into_inner().map_err(|error| error.into_error())?;
    file.sync_all()?;
    Ok(TakenSnapshot { applied: Applied { index, term }, conf_state, durable: true })
}

/// A view's or trigger's definition without its `DEFINER=user@host` (the
/// installing server's user may not exist there).
fn strip_definer(create: &str) -> String {
    let Some(at) = create.find("DEFINER=") else { return create.to_owned() };
    let rest = &create[at + "DEFINER=".len()..];
    // `user`@`host`, each part quoted with backticks or bare.
    let mut end = 0;
    let mut quoted = false;
    for (position, c) in rest.char_indices() {
        match c {
            '`' => quoted = !quoted,
            ' ' if !quoted => {
                end = position;
                break;
            }
            _ => {}
        }
    }
    format!("{}{}", &create[..at], rest[end..].trim_start())
}

/// Reads records back, checking the sum at the end.
struct Reader<R: Read> {
    input: R,
    crc: u32,
}

impl<R: Read> Reader<R> {
    fn next(&mut self) -> Result<(u8, Vec<u8>), SqlError> {
        let bad = |what: &str| SqlError::Other(format!("snapshot file: {what}"));
        let mut head = [0u8; 9];
        self.input.read_exact(&mut head).map_err(|_| bad("cut short"))?;
        let length = usize::try_from(u64::from_le_bytes(head[1..].try_into().expect("8 bytes")))
            .map_err(|_| bad("a record too long"))?;
        if length > 1 << 31 {
            return Err(bad("a record too long"));
        }
        let mut payload = vec![0u8; length];
        self.input.read_exact(&mut payload).map_err(|_| bad("cut short"))?;
        if head[0] == b'E' {
            let sum = payload.get(..8).map(|bytes| u64::from_le_bytes(bytes.try_into().expect("8 bytes")));
            if sum != Some(u64::from(self.crc)) {
                return Err(bad("checksum mismatch"));
            }
        } else {
            self.crc = crc32c::crc32c_append(self.crc, &head);
            self.crc = crc32c::crc32c_append(self.crc, &payload);
        }
        Ok((head[0], payload))
    }
}

fn take_field<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], SqlError> {
    let bad = || SqlError::Other("snapshot file: a bad field".into());
    let length = input.get(..8).ok_or_else(bad)?;
    let length = usize::try_from(u64::from_le_bytes(length.try_into().expect("8 bytes"))).map_err(|_| bad())?;
    let (value, rest) = input[8..].split_at_checked(length).ok_or_else(bad)?;
    *input = rest;
    Ok(value)
}

/// The database snapshots load into before the swap.
fn install_database(live: &str) -> String {
    format!("{live}__deeb_install")
}

/// Loads the snapshot at `src` into a fresh database, swaps it in, and
/// recreates views and triggers. The old state stays whole until the swap.
pub(super) fn install(opts: &Opts, live_conn: &mut Conn, src: &Path) -> Result<(), SqlError> {
    let live = opts.get_db_name().unwrap_or_default().to_owned();
    let staging = install_database(&live);
    let mut conn = connect(opts)?;
    let (charset, collation): (String, String) = conn
        .query_first(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA \
             WHERE SCHEMA_NAME = DATABASE()",
        )
        .map_err(sql_error)?
        .unwrap_or_else(|| ("utf8mb4".into(), "utf8mb4_general_ci".into()));
    conn.query_drop(format!("DROP DATABASE IF EXISTS {}", quote(&staging))).map_err(sql_error)?;
    conn.query_drop(format!("CREATE DATABASE {} CHARACTER SET {charset} COLLATE {collation}", quote(&staging)))
        .map_err(sql_error)?;
    conn.query_drop(format!("USE {}", quote(&staging))).map_err(sql_error)?;
    conn.query_drop("SET SESSION foreign_key_checks = 0, unique_checks = 0").map_err(sql_error)?;
    load(&mut conn, src)?;
    // The swap: every live table and view out of the way (kept under
    // trash names until finished), every loaded table in.
    let live_tables: Vec<String> = live_conn
        .query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME")
        .map_err(sql_error)?;
    let loaded: Vec<String> = conn
        .query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME")
        .map_err(sql_error)?;
    let mut renames: Vec<String> = live_tables
        .iter()
        .enumerate()
        .map(|(n, table)| format!("{l}.{} TO {l}.`_deeb_trash_{n}`", quote(table), l = quote(&live)))
        .collect();
    renames.extend(
        loaded.iter().map(|table| format!("{}.{t} TO {}.{t}", quote(&staging), quote(&live), t = quote(table))),
    );
    live_conn.query_drop(format!("RENAME TABLE {}", renames.join(", "))).map_err(sql_error)?;
    finish_install(live_conn)?;
    Ok(())
}

fn load(conn: &mut Conn, src: &Path) -> Result<(), SqlError> {
    let file = File::open(src).map_err(|error| SqlError::Other(format!("snapshot file: {error}")))?;
    let mut input = BufReader::new(file);
    let mut magic = vec![0u8; MAGIC.len()];
    input.read_exact(&mut magic).map_err(|_| SqlError::Other("snapshot file: cut short".into()))?;
    if magic != MAGIC {
        return Err(SqlError::Other("not a deeb MySQL snapshot file".into()));
    }
    let mut reader = Reader { input, crc: crc32c::crc32c(MAGIC) };
    for statement in SCHEMA {
        conn.query_drop(statement).map_err(sql_error)?;
    }
    let mut inserting = Inserting::default();
    let mut objects = 0u64;
    conn.query_drop("START TRANSACTION").map_err(sql_error)?;
    loop {
        let (kind, payload) = reader.next()?;
        match kind {
            b'S' => {
                let bad = || SqlError::Other("snapshot file: a bad state record".into());
                let index = u64::from_le_bytes(payload.get(..8).ok_or_else(bad)?.try_into().expect("8 bytes"));
                let term = u64::from_le_bytes(payload.get(8..16).ok_or_else(bad)?.try_into().expect("8 bytes"));
                let mut rest = &payload[16..];
                let conf = take_field(&mut rest)?.to_vec();
                let conf = (rest.first() == Some(&1)).then_some(conf);
                conn.exec_drop(
                    "UPDATE _deeb_state SET applied_index = ?, applied_term = ?, conf_state = ?, installing = 1 \
                     WHERE id = 1",
                    (index, term, conf),
                )
                .map_err(sql_error)?;
            }
            b'T' => {
                inserting.flush(conn)?;
                let mut rest = &payload[..];
                let table = String::from_utf8_lossy(take_field(&mut rest)?).into_owned();
                let create = String::from_utf8_lossy(take_field(&mut rest)?).into_owned();
                if !table.starts_with("_deeb_") {
                    conn.query_drop(create).map_err(sql_error)?;
                }
                inserting.table = table;
            }
            b'R' => {
                let mut rest = &payload[..];
                let mut row = Vec::new();
                while !rest.is_empty() {
                    row.push(
                        values::decode(&mut rest)
                            .ok_or_else(|| SqlError::Other("snapshot file: a bad value".into()))?,
                    );
                }
                inserting.push(conn, row, payload.len())?;
            }
            b'O' => {
                inserting.flush(conn)?;
                objects += 1;
                conn.exec_drop(
                    "INSERT INTO _deeb_objects (name, definition) VALUES (?, ?)",
                    (format!("{objects:010}"), payload),
                )
                .map_err(sql_error)?;
            }
            b'E' => break,
            other => return Err(SqlError::Other(format!("snapshot file: an unknown record {other}"))),
        }
    }
    inserting.flush(conn)?;
    conn.query_drop("COMMIT").map_err(sql_error)?;
    Ok(())
}

/// Rows waiting to be inserted together.
#[derive(Default)]
struct Inserting {
    table: String,
    rows: Vec<Vec<Value>>,
    bytes: usize,
    since_commit: usize,
}

impl Inserting {
    fn push(&mut self, conn: &mut Conn, row: Vec<Value>, bytes: usize) -> Result<(), SqlError> {
        self.rows.push(row);
        self.bytes += bytes;
        if self.rows.len() >= INSERT_ROWS || self.bytes >= INSERT_BYTES {
            self.flush(conn)?;
        }
        Ok(())
    }

    fn flush(&mut self, conn: &mut Conn) -> Result<(), SqlError> {
        let Some(width) = self.rows.first().map(Vec::len) else { return Ok(()) };
        let one = format!("({})", vec!["?"; width].join(", "));
        let sql = format!("INSERT INTO {} VALUES {}", quote(&self.table), vec![one; self.rows.len()].join(", "));
        let params: Vec<Value> = self.rows.drain(..).flatten().collect();
        self.since_commit += params.len() / width.max(1);
        conn.exec_drop(sql, params).map_err(sql_error)?;
        self.bytes = 0;
        if self.since_commit >= COMMIT_ROWS {
            conn.query_drop("COMMIT; START TRANSACTION").map_err(sql_error)?;
            self.since_commit = 0;
        }
        Ok(())
    }
}

/// After the swap (or on open, after a crash past it): drops the old
/// tables and views, recreates views and triggers, and clears the mark.
/// Does nothing unless an install is marked.
pub(super) fn finish_install(conn: &mut Conn) -> Result<(), SqlError> {
    let installing: Option<u8> =
        conn.query_first("SELECT installing FROM _deeb_state WHERE id = 1").map_err(sql_error)?;
    if installing != Some(1) {
        return Ok(());
    }
    conn.query_drop("SET SESSION foreign_key_checks = 0").map_err(sql_error)?;
    let leftovers: Vec<(String, String)> = conn
        .query(
            "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() \
             AND (TABLE_NAME LIKE '\\_deeb\\_trash\\_%' OR TABLE_TYPE = 'VIEW')",
        )
        .map_err(sql_error)?;
    for (name, kind) in leftovers {
        let what = if kind == "VIEW" { "VIEW" } else { "TABLE" };
        conn.query_drop(format!("DROP {what} IF EXISTS {}", quote(&name))).map_err(sql_error)?;
    }
    let triggers: Vec<String> = conn
        .query("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()")
        .map_err(sql_error)?;
    for name in triggers {
        conn.query_drop(format!("DROP TRIGGER IF EXISTS {}", quote(&name))).map_err(sql_error)?;
    }
    let objects: Vec<Vec<u8>> = conn.query("SELECT definition FROM _deeb_objects ORDER BY name").map_err(sql_error)?;
    for definition in objects {
        conn.query_drop(String::from_utf8_lossy(&definition)).map_err(sql_error)?;
    }
    conn.query_drop("DELETE FROM _deeb_objects").map_err(sql_error)?;
    conn.query_drop("UPDATE _deeb_state SET installing = 0 WHERE id = 1").map_err(sql_error)?;
    conn.query_drop("SET SESSION foreign_key_checks = 1").map_err(sql_error)?;
    let staging: Option<String> = conn.query_first("SELECT DATABASE()").map_err(sql_error)?;
    if let Some(live) = staging {
        conn.query_drop(format!("DROP DATABASE IF EXISTS {}", quote(&install_database(&live)))).map_err(sql_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definers_are_left_out() {
        assert_eq!(
            strip_definer("CREATE ALGORITHM=UNDEFINED DEFINER=`root`@`localhost` SQL SECURITY DEFINER VIEW `v` AS x"),
            "CREATE ALGORITHM=UNDEFINED SQL SECURITY DEFINER VIEW `v` AS x"
        );
        assert_eq!(
            strip_definer("CREATE DEFINER=`a b`@`%` trigger tr before insert on t"),
            "CREATE trigger tr before insert on t"
        );
        assert_eq!(strip_definer("CREATE VIEW v AS x"), "CREATE VIEW v AS x");
    }
}
