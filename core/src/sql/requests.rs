//! Idempotency keys: the requests a client named with a key, and their
//! results, kept in the replicated table `_deeb_requests` so that a retry
//! is answered with the first answer instead of being applied again. Every
//! replica records a key in the same transaction as its request's row
//! changes (the leader in its batch, the others when they apply the entry)
//! and forgets old keys at the same entries, so the table is equal on every
//! replica, survives failover and travels in snapshots.

use deeb_proto::{ExecuteResponse, StatementResult};
use prost::Message as _;
use rusqlite::{params, Connection, OptionalExtension};

use super::SqlError;

/// The table (created with the other internal tables).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _deeb_requests(
    key TEXT PRIMARY KEY,
    applied_index INTEGER NOT NULL,
    response BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS _deeb_requests_by_index ON _deeb_requests(applied_index, key);
";

/// Keys older than this many log entries are forgotten.
pub const KEY_ENTRIES_MAX: u64 = 100_000;
/// At most this many keys are remembered (the oldest go first).
pub const KEYS_MAX: u64 = 100_000;
/// The longest key a client may give.
pub const KEY_BYTES_MAX: usize = 128;

/// Records `key`'s results as applied at `index`. A key recorded again
/// (two leaders raced) keeps the later record, on every replica alike.
pub(crate) fn record(conn: &Connection, key: &str, index: u64, results: &[StatementResult]) -> Result<(), SqlError> {
    let response = ExecuteResponse { results: results.to_vec(), served_by: 0, index: 0 }.encode_to_vec();
    conn.execute(
        "INSERT OR REPLACE INTO _deeb_requests(key, applied_index, response) VALUES (?1, ?2, ?3)",
        params![key, index as i64, response],
    )?;
    Ok(())
}

/// Forgets keys past the bounds, as of the entry at `index`. Called after
/// recording the entry's keys, on every replica.
pub(crate) fn prune(conn: &Connection, index: u64) -> Result<(), SqlError> {
    let oldest = index.saturating_sub(KEY_ENTRIES_MAX) as i64;
    conn.execute("DELETE FROM _deeb_requests WHERE applied_index <= ?1", [oldest])?;
    let count: i64 = conn.query_row("SELECT count(*) FROM _deeb_requests", [], |row| row.get(0))?;
    let excess = count - KEYS_MAX as i64;
    if excess > 0 {
        conn.execute(
            "DELETE FROM _deeb_requests WHERE key IN \
             (SELECT key FROM _deeb_requests ORDER BY applied_index, key LIMIT ?1)",
            [excess],
        )?;
    }
    Ok(())
}

/// The index and results recorded for `key`, if it is remembered.
pub(crate) fn lookup(conn: &Connection, key: &str) -> Result<Option<(u64, Vec<StatementResult>)>, SqlError> {
    let row: Option<(i64, Vec<u8>)> = conn
        .query_row("SELECT applied_index, response FROM _deeb_requests WHERE key = ?1", [key], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let Some((index, response)) = row else { return Ok(None) };
    let response = ExecuteResponse::decode(response.as_slice())
        .map_err(|error| SqlError::Other(format!("the recorded response of key {key:?} does not decode: {error}")))?;
    Ok(Some((index as u64, response.results)))
}
