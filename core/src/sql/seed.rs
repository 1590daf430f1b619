//! Seeding a brand-new node's database from a SQLite file: `deeb restore
//! --bootstrap`. Run with the same file and the same members on every node
//! of a new cluster, it gives each the same database, recorded as applied
//! at a snapshot index (the node's log starts after it), so the nodes agree
//! from their first entry and a node that joins later is sent a snapshot
//! instead of replaying entries onto an empty database.

use std::fs::File;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{requests, state_machine, Applied, SqlError};

/// What a seeded database holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeded {
    /// The client tables copied from the file.
    pub tables: Vec<String>,
    /// Their rows in all.
    pub rows: u64,
}

/// Copies the SQLite database at `source` (a deeb backup or any SQLite
/// file) to a new file at `dest`, checked, with deeb's own tables recorded
/// as: applied at `applied`, membership `conf_state` with `members`, and
/// no idempotency keys (those of a backup belong to its old cluster).
///
/// Refuses (naming the table) what deeb could not replicate: a file that
/// fails `PRAGMA integrity_check`, virtual tables, temporary state, keys
/// deeb refuses at `CREATE TABLE`, NULL in a key column, violated foreign
/// keys. `dest` is written beside itself and renamed into place (synced),
/// so it is whole or absent.
pub fn seed(
    source: &Path,
    dest: &Path,
    applied: Applied,
    conf_state: &[u8],
    members: &[(u64, String)],
) -> Result<Seeded, SqlError> {
    let refuse = |message: String| SqlError::Other(format!("cannot seed from {}: {message}", source.display()));
    if dest.exists() {
        return Err(SqlError::Other(format!("{} exists: seed only a new node's data directory", dest.display())));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let original = Connection::open_with_flags(source, flags).map_err(|error| refuse(error.to_string()))?;
    let verdict: String = original
        .query_row("PRAGMA integrity_check(1)", [], |row| row.get(0))
        .map_err(|error| refuse(error.to_string()))?;
    if verdict != "ok" {
        return Err(refuse(format!("it fails SQLite's integrity check: {verdict}")));
    }
    let seeding = dest.with_extension("seeding");
    let _ = std::fs::remove_file(&seeding);
    let seeding_text = seeding.to_str().ok_or_else(|| SqlError::Other(format!("not UTF-8: {}", seeding.display())))?;
    original.execute("VACUUM INTO ?1", [seeding_text])?;
    drop(original);
    let seeded = check_and_record(&seeding, applied, conf_state, members).map_err(|error| {
        let _ = std::fs::remove_file(&seeding);
        match error {
            Refusal::Refused(message) => refuse(message),
            Refusal::Sql(error) => error,
        }
    })?;
    let io = |error: std::io::Error| SqlError::Other(format!("seed {}: {error}", dest.display()));
    File::open(&seeding).and_then(|file| file.sync_all()).map_err(io)?;
    std::fs::rename(&seeding, dest).map_err(io)?;
    if let Some(dir) = dest.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        File::open(dir).and_then(|file| file.sync_all()).map_err(io)?;
    }
    Ok(seeded)
}

pub(super) enum Refusal {
    Refused(String),
    Sql(SqlError),
}

/// SQLite's errors on the file are the file's (not a database, damaged,
/// a `_deeb_meta` of another shape...): deeb refuses it. Only the disk or
/// memory failing is this node's error.
impl From<rusqlite::Error> for Refusal {
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match error.sqlite_error_code() {
            Some(ErrorCode::SystemIoFailure | ErrorCode::DiskFull | ErrorCode::CannotOpen | ErrorCode::OutOfMemory) => {
                Refusal::Sql(error.into())
            }
            _ => Refusal::Refused(format!("SQLite: {error}")),
        }
    }
}

impl From<SqlError> for Refusal {
    fn from(error: SqlError) -> Self {
        match error {
            SqlError::Sqlite(error) => error.into(),
            other => Refusal::Sql(other),
        }
    }
}

/// Checks the file at `path` in place and records deeb's own tables in it
/// (see [`seed`]); `Refused` says why deeb cannot take it.
pub(super) fn check_and_record(
    path: &Path,
    applied: Applied,
    conf_state: &[u8],
    members: &[(u64, String)],
) -> Result<Seeded, Refusal> {
    let conn = Connection::open(path)?;
    let verdict: String = conn.query_row("PRAGMA integrity_check(1)", [], |row| row.get(0))?;
    if verdict != "ok" {
        return Err(Refusal::Refused(format!("it fails SQLite's integrity check: {verdict}")));
    }
    let virtual_table = "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%'";
    if let Some(name) = conn.query_row(virtual_table, [], |row| row.get::<_, String>(0)).optional()? {
        return Err(Refusal::Refused(format!("table {name:?} is a virtual table (deeb does not replicate those)")));
    }
    let tables: Vec<String> = {
        let sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
                   AND name NOT LIKE '\\_deeb\\_%' ESCAPE '\\' ORDER BY name";
        let mut statement = conn.prepare(sql)?;
        let names = statement.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?;
        names
    };
    let mut rows = 0u64;
    for table in &tables {
        if let Some(reason) = state_machine::unsupported_primary_key(&conn, table)? {
            return Err(Refusal::Refused(format!("table {table:?}: {reason}")));
        }
        if let Some(column) = null_key_column(&conn, table)? {
            return Err(Refusal::Refused(format!(
                "table {table:?} has a row with NULL in its PRIMARY KEY column {column:?} (deeb cannot replicate \
                 such rows: give them a key first)"
            )));
        }
        let quoted = table.replace('"', "\"\"");
        rows += conn.query_row(&format!("SELECT count(*) FROM \"{quoted}\""), [], |row| row.get::<_, i64>(0))? as u64;
    }
    let violated = "SELECT \"table\" FROM pragma_foreign_key_check LIMIT 1";
    if let Some(table) = conn.query_row(violated, [], |row| row.get::<_, String>(0)).optional()? {
        return Err(Refusal::Refused(format!("table {table:?} has rows whose foreign keys point nowhere")));
    }
    // One file, no WAL beside it, so that the rename moves all of it.
    let mode: String = conn.query_row("PRAGMA journal_mode=DELETE", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(Refusal::Sql(SqlError::Other(format!("could not leave WAL mode (journal_mode={mode})"))));
    }
    conn.execute_batch(&format!("BEGIN IMMEDIATE;{}{}", state_machine::SCHEMA, requests::SCHEMA))?;
    conn.execute_batch(
        "DELETE FROM _deeb_requests; DELETE FROM _deeb_members; DROP TABLE IF EXISTS _deeb_restore; \
         DROP TABLE IF EXISTS _deeb_restores;",
    )?;
    for (id, address) in members {
        conn.execute("INSERT INTO _deeb_members(id, address) VALUES (?1, ?2)", rusqlite::params![*id as i64, address])?;
    }
    conn.execute(
        "UPDATE _deeb_meta SET applied_index = ?1, applied_term = ?2, conf_state = ?3 WHERE id = 0",
        rusqlite::params![applied.index as i64, applied.term as i64, conf_state],
    )?;
    conn.execute_batch("COMMIT")?;
    Ok(Seeded { tables, rows })
}

/// A key column of a rowid table holding NULL somewhere, if one does
/// (SQLite lets NULL into such keys; sessions cannot describe those rows).
fn null_key_column(conn: &Connection, table: &str) -> Result<Option<String>, SqlError> {
    let keys = "SELECT c.name FROM pragma_table_info(?1) AS c, pragma_table_list AS t \
                WHERE t.schema = 'main' AND t.name = ?1 AND NOT t.wr AND c.pk > 0 \
                AND EXISTS (SELECT 1 FROM pragma_index_list(?1) AS i WHERE i.origin = 'pk') ORDER BY c.pk";
    let columns: Vec<String> = {
        let mut statement = conn.prepare(keys)?;
        let names = statement.query_map([table], |row| row.get(0))?.collect::<Result<_, _>>()?;
        names
    };
    let quoted_table = table.replace('"', "\"\"");
    for column in columns {
        let quoted = column.replace('"', "\"\"");
        let sql = format!("SELECT 1 FROM \"{quoted_table}\" WHERE \"{quoted}\" IS NULL LIMIT 1");
        if conn.query_row(&sql, [], |_| Ok(())).optional()?.is_some() {
            return Ok(Some(column));
        }
    }
    Ok(None)
}
