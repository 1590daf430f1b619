//! Whole-database restores through the log ([`RestorePart`]): every replica
//! keeps a restore's pieces in table `_deeb_restore` as it applies them
//! (replicated state: in snapshots and digests like any table), and at the
//! last piece writes them out as a file beside its database, checks it (its
//! size and CRC32C, then as `deeb restore --bootstrap` checks a file) and
//! installs it as the state as of that entry, keeping the membership. The
//! install is one synced transaction; a crash before it applies the last
//! entry again. A file that fails a check leaves the old state (the pieces
//! dropped), on every replica alike: the checks read only the pieces.
//!
//! A piece that does not follow the stored ones changes nothing, nor does
//! one of a restore that completed (a client sending a piece again); the
//! first (offset 0) drops any other restore's pieces, and so does a new
//! leader's first entry ([`SqliteStateMachine::drop_unfinished_restore`]): a restore
//! whose leader is gone never completes, so it leaves nothing behind.
//!
//! What the last piece came to is recorded in table `_deeb_restores` (in
//! the installed state, or beside the old one), for its client to read.

use std::io::Write as _;
use std::path::PathBuf;

use deeb_proto::RestorePart;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::seed::{self, Refusal};
use super::state_machine::{write_applied, SqliteStateMachine};
use super::{Applied, ApplyError, SqlError};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS _deeb_restore(\
    offset INTEGER PRIMARY KEY, id TEXT NOT NULL, data BLOB NOT NULL)";

/// Why a restore's file was not installed (the same on every replica).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A piece stored (or one that changed nothing).
    Stored,
    /// The file is the state now.
    Installed { tables: usize, rows: u64 },
    /// The file failed a check; the old state stays.
    Refused(String),
}

impl SqliteStateMachine {
    /// Applies one restore piece at `applied`.
    pub(super) fn apply_restore_part(&mut self, part: &RestorePart, applied: Applied) -> Result<Outcome, ApplyError> {
        self.ensure_no_batch()?;
        // A piece sent again (its client did not learn the first's
        // outcome) changes nothing: a restore that completed is never
        // applied twice, nor is a first piece already stored.
        let completed = outcome_recorded(self.writer_mut(), &part.id)?;
        let expected = expected_offset(self.writer_mut(), &part.id)?;
        let follows = !completed && (part.offset == 0 && expected.is_none() || Some(part.offset) == expected);
        if part.last && follows {
            return self.install(part, applied);
        }
        let tx = self.writer_mut().transaction_with_behavior(TransactionBehavior::Immediate).map_err(SqlError::from)?;
        if follows {
            tx.execute_batch(SCHEMA).map_err(SqlError::from)?;
            if part.offset == 0 {
                tx.execute("DELETE FROM _deeb_restore", []).map_err(SqlError::from)?;
            }
            tx.execute(
                "INSERT INTO _deeb_restore(offset, id, data) VALUES (?1, ?2, ?3)",
                params![part.offset as i64, part.id, part.data],
            )
            .map_err(SqlError::from)?;
        }
        write_applied(&tx, applied)?;
        tx.commit().map_err(SqlError::from)?;
        self.set_applied(applied);
        Ok(Outcome::Stored)
    }

    /// A new leader's first entry: an unfinished restore is dropped (in the
    /// entry's own transaction, `conn`).
    pub(super) fn drop_unfinished_restore(conn: &Connection) -> Result<(), SqlError> {
        if table_exists(conn, "_deeb_restore")? {
            conn.execute("DELETE FROM _deeb_restore", [])?;
        }
        Ok(())
    }

    /// The last piece: the file written out, checked and installed, or the
    /// pieces dropped.
    fn install(&mut self, part: &RestorePart, applied: Applied) -> Result<Outcome, ApplyError> {
        let file = self.restore_file(applied);
        let _removed = RemovedOnDrop(file.clone());
        let written = write_file(self.writer_mut(), part, &file)?;
        let checked = match written {
            Err(reason) => Err(reason),
            Ok(()) => {
                let conf_state = self.conf_state()?.unwrap_or_default();
                let members: Vec<(u64, String)> = self.members()?;
                match seed::check_and_record(&file, applied, &conf_state, &members) {
                    Ok(seeded) => Ok(seeded),
                    Err(Refusal::Refused(reason)) => Err(reason),
                    Err(Refusal::Sql(error)) => return Err(error.into()),
                }
            }
        };
        match checked {
            Ok(seeded) => {
                let outcome = format!("installed: {} tables, {} rows", seeded.tables.len(), seeded.rows);
                let conn = Connection::open(&file).map_err(SqlError::from)?;
                record_outcome(&conn, &part.id, applied, &outcome)?;
                drop(conn);
                let installed = self.install_snapshot(&file)?;
                if installed != applied {
                    return Err(ApplyError::Sql(SqlError::Other(format!(
                        "the restored file installed as {installed:?}, not {applied:?}"
                    ))));
                }
                Ok(Outcome::Installed { tables: seeded.tables.len(), rows: seeded.rows })
            }
            Err(reason) => {
                let tx = self
                    .writer_mut()
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(SqlError::from)?;
                Self::drop_unfinished_restore(&tx)?;
                record_outcome(&tx, &part.id, applied, &format!("refused: {reason}"))?;
                write_applied(&tx, applied)?;
                tx.commit().map_err(SqlError::from)?;
                self.set_applied(applied);
                Ok(Outcome::Refused(reason))
            }
        }
    }

    /// Where the last piece's file is written (beside the database).
    fn restore_file(&self, applied: Applied) -> PathBuf {
        self.path().with_extension(format!("restore-{}.db", applied.index))
    }
}

/// Records what restore `id` came to, for the client that sent it to
/// read (`SELECT outcome FROM _deeb_restores WHERE id = ?`): the last
/// restore's only; none means it did not complete.
fn record_outcome(conn: &Connection, id: &str, applied: Applied, outcome: &str) -> Result<(), SqlError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _deeb_restores(id TEXT PRIMARY KEY, applied_index INTEGER NOT NULL, outcome TEXT NOT NULL); \
         DELETE FROM _deeb_restores;",
    )?;
    conn.execute(
        "INSERT INTO _deeb_restores(id, applied_index, outcome) VALUES (?1, ?2, ?3)",
        params![id, applied.index as i64, outcome],
    )?;
    Ok(())
}

/// True if restore `id` completed here (installed or refused).
fn outcome_recorded(conn: &Connection, id: &str) -> Result<bool, SqlError> {
    if !table_exists(conn, "_deeb_restores")? {
        return Ok(false);
    }
    Ok(conn.query_row("SELECT 1 FROM _deeb_restores WHERE id = ?1", [id], |_| Ok(())).optional()?.is_some())
}

/// Where the next piece of restore `id` goes, if its pieces are stored.
fn expected_offset(conn: &Connection, id: &str) -> Result<Option<u64>, SqlError> {
    if !table_exists(conn, "_deeb_restore")? {
        return Ok(None);
    }
    let next = "SELECT offset + length(data) FROM _deeb_restore WHERE id = ?1 ORDER BY offset DESC LIMIT 1";
    Ok(conn.query_row(next, [id], |row| row.get::<_, i64>(0)).optional()?.map(|next| next as u64))
}

fn table_exists(conn: &Connection, name: &str) -> Result<bool, SqlError> {
    let exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1";
    Ok(conn.query_row(exists, [name], |_| Ok(())).optional()?.is_some())
}

/// Writes the stored pieces and the last one to `file` (a piece at a time),
/// checking its size and CRC32C: `Err` names what does not match.
fn write_file(conn: &Connection, last: &RestorePart, file: &std::path::Path) -> Result<Result<(), String>, SqlError> {
    let io = |error: std::io::Error| SqlError::Other(format!("restore file {}: {error}", file.display()));
    let mut out = std::io::BufWriter::new(std::fs::File::create(file).map_err(io)?);
    let (mut written, mut crc32c) = (0_u64, 0_u32);
    if last.offset > 0 {
        let mut pieces = conn.prepare("SELECT offset, data FROM _deeb_restore WHERE id = ?1 ORDER BY offset")?;
        let mut rows = pieces.query([&last.id])?;
        while let Some(row) = rows.next()? {
            let (offset, data): (i64, Vec<u8>) = (row.get(0)?, row.get(1)?);
            if offset as u64 != written {
                return Ok(Err(format!("a piece is missing at byte {written}")));
            }
            crc32c = crc32c::crc32c_append(crc32c, &data);
            out.write_all(&data).map_err(io)?;
            written += data.len() as u64;
        }
    }
    crc32c = crc32c::crc32c_append(crc32c, &last.data);
    out.write_all(&last.data).map_err(io)?;
    written += last.data.len() as u64;
    out.into_inner().map_err(|error| io(error.into_error()))?.sync_all().map_err(io)?;
    if written != last.total_bytes || crc32c != last.crc32c {
        return Ok(Err(format!(
            "the file arrived damaged: {written} of {} bytes, CRC32C {crc32c:08x}, expected {:08x}",
            last.total_bytes, last.crc32c
        )));
    }
    Ok(Ok(()))
}

struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut name = self.0.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(name));
        }
    }
}
