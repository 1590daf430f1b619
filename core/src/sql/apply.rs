//! The apply path: replaying a leader's batch (DDL texts and changesets)
//! with triggers off, detecting any divergence.

use std::collections::HashMap;

use deeb_proto::{op, Sequences, Write, WriteBatch};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, TransactionBehavior};

use super::digest::primary_key;
use super::session::{self, ApplyMode, ChangeInfo, Conflict};
use super::state_machine::{is_fatal, write_applied, SqliteStateMachine};
use super::{requests, rowids};
use super::{Applied, ApplyError, SqlError};

/// A divergence at `index` with `reason`.
fn divergence(index: u64, reason: String) -> ApplyError {
    ApplyError::Divergence { index, reason }
}

impl SqliteStateMachine {
    /// Applies a committed batch executed elsewhere (or rolled back here) in
    /// one transaction with triggers and foreign keys off: the changesets
    /// already carry what triggers and foreign-key actions did on the
    /// leader, and running them again would change rows twice. Any
    /// conflict, or a change SQLite would skip (missing table, column count
    /// mismatch), is [`ApplyError::Divergence`]; the transaction is then
    /// rolled back.
    pub fn apply_batch(&mut self, batch: &WriteBatch, applied: Applied) -> Result<(), ApplyError> {
        self.ensure_no_batch()?;
        // A restore piece is an entry of its own (the leader batches it alone).
        if let [Write { restore: Some(part), .. }] = &batch.writes[..] {
            let outcome = self.apply_restore_part(part, applied)?;
            if !matches!(outcome, super::restore::Outcome::Stored) {
                tracing::info!(index = applied.index, id = %part.id, ?outcome, "restore");
            }
            return Ok(());
        }
        let foreign_keys = if self.apply_foreign_keys() { "ON" } else { "OFF" };
        let outside = self.applied_index_outside_batch();
        let conn = self.writer_mut();
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false).map_err(SqlError::from)?;
        conn.execute_batch(&format!("PRAGMA foreign_keys={foreign_keys}")).map_err(SqlError::from)?;
        // The leader's bound on values is not this replica's to enforce.
        session::set_length_limit(conn, session::LENGTH_MAX);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(SqlError::from)?;
        let mut recorded_keys = false;
        for write in &batch.writes {
            apply_ops(&tx, write.ops.iter().map(|op| op.kind.as_ref()), applied.index, ApplyMode::Replica)?;
            if !write.idempotency_key.is_empty() {
                requests::record(&tx, &write.idempotency_key, applied.index, &write.results)?;
                recorded_keys = true;
            }
        }
        // As the leader did when it committed this batch.
        if recorded_keys {
            requests::prune(&tx, applied.index)?;
        }
        if !outside {
            write_applied(&tx, applied)?;
        }
        tx.commit().map_err(SqlError::from)?;
        if outside {
            write_applied(self.writer_mut(), applied)?;
        }
        self.set_applied(applied);
        Ok(())
    }
}

/// Applies a write's (or a statement's) ops in order.
pub(crate) fn apply_ops<'o>(
    conn: &Connection,
    ops: impl IntoIterator<Item = Option<&'o op::Kind>>,
    index: u64,
    mode: ApplyMode,
) -> Result<(), ApplyError> {
    // The changesets a Rowids op renumbers: those since any other op.
    let mut changesets: Vec<&[u8]> = Vec::new();
    for kind in ops {
        match kind {
            Some(op::Kind::Changeset(changeset)) => {
                apply_changeset(conn, changeset, index, mode)?;
                changesets.push(changeset);
                continue;
            }
            // Names for the change stream; the changesets after it are
            // still one statement's.
            Some(op::Kind::Columns(_)) => continue,
            Some(op::Kind::Rowids(rowids)) => rowids::apply_rowids(conn, &changesets, rowids, index)?,
            Some(op::Kind::Ddl(sql)) => conn.execute_batch(sql).map_err(|e| {
                if is_fatal(&e) {
                    ApplyError::Sql(e.into())
                } else {
                    divergence(index, format!("DDL {sql:?} failed: {e}"))
                }
            })?,
            Some(op::Kind::Sequences(sequences)) => apply_sequences(conn, sequences, index)?,
            Some(op::Kind::Mysql(_) | op::Kind::MysqlCheck(_)) => {
                return Err(divergence(index, "a MySQL op in a SQLite replica".into()))
            }
            None => return Err(divergence(index, "an op with no kind (unknown op type?)".into())),
        }
        changesets.clear();
    }
    Ok(())
}

/// Checks, applies and verifies one changeset.
pub(crate) fn apply_changeset(
    conn: &Connection,
    changeset: &[u8],
    index: u64,
    mode: ApplyMode,
) -> Result<(), ApplyError> {
    let changes =
        session::changeset_changes(changeset).map_err(|e| divergence(index, format!("unreadable changeset: {e}")))?;
    check_tables(conn, &changes, index)?;
    let conflicts = match apply_counted(conn, changeset, changes.len(), index, mode)? {
        Err(conflicts) if conflicts.iter().any(Conflict::is_update_constraint) => {
            // Undone; the UPDATEs may only need another order.
            let [deletes, inserts] =
                session::updates_as_deletes_and_inserts(conn, changeset).map_err(SqlError::from)?;
            let count = |c: &[u8]| session::changeset_changes(c).map(|c| c.len()).map_err(SqlError::from);
            match apply_counted(conn, &deletes, count(&deletes)?, index, mode)? {
                Ok(()) => apply_counted(conn, &inserts, count(&inserts)?, index, mode)?,
                conflicts => conflicts,
            }
        }
        result => result,
    };
    conflicts.map_err(|conflicts| {
        let conflicts: Vec<String> = conflicts.iter().map(ToString::to_string).collect();
        divergence(index, format!("changeset conflict: {}", conflicts.join("; ")))
    })
}

/// Applies one changeset of `changes` changes and checks that as many rows
/// were modified (SQLite skips some changes silently). Conflicts are the
/// inner error; the apply is then undone.
fn apply_counted(
    conn: &Connection,
    changeset: &[u8],
    changes: usize,
    index: u64,
    mode: ApplyMode,
) -> Result<Result<(), Vec<Conflict>>, ApplyError> {
    let before = conn.total_changes();
    let conflicts = session::apply_changeset(conn, changeset, mode).map_err(SqlError::from)?;
    if !conflicts.is_empty() {
        return Ok(Err(conflicts));
    }
    let modified = conn.total_changes() - before;
    if modified != changes as u64 {
        return Err(divergence(
            index,
            format!("changeset has {changes} change(s) but {modified} row(s) were modified"),
        ));
    }
    Ok(Ok(()))
}

/// Sets the AUTOINCREMENT counters to the leader's values.
pub(crate) fn apply_sequences(conn: &Connection, sequences: &Sequences, index: u64) -> Result<(), ApplyError> {
    let exists: bool = conn
        .query_row("SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence')", [], |r| r.get(0))
        .map_err(SqlError::from)?;
    if !exists {
        return Err(divergence(index, "AUTOINCREMENT counters for a database without sqlite_sequence".into()));
    }
    // The whole table as the leader's SQLite left it, row numbers included:
    // a statement the leader replays (triggers) inserts its AUTOINCREMENT
    // rows first and numbers their counters in another order than SQLite
    // (seed 1357575055). Entries from before rowids were carried have none.
    let rows: Vec<_> = sequences.values.iter().filter_map(|s| s.seq.map(|seq| (s.rowid, &s.table, seq))).collect();
    if !rows.is_empty() && rows.iter().all(|(rowid, ..)| *rowid > 0) {
        conn.execute("DELETE FROM sqlite_sequence", []).map_err(SqlError::from)?;
        for (rowid, table, seq) in rows {
            conn.execute("INSERT INTO sqlite_sequence(rowid, name, seq) VALUES (?1, ?2, ?3)", (rowid, table, seq))
                .map_err(SqlError::from)?;
        }
        return Ok(());
    }
    for sequence in &sequences.values {
        let table = sequence.table.as_str();
        let updated = match sequence.seq {
            Some(seq) => conn.execute("UPDATE sqlite_sequence SET seq = ?2 WHERE name = ?1", (table, seq)),
            None => conn.execute("DELETE FROM sqlite_sequence WHERE name = ?1", [table]),
        }
        .map_err(SqlError::from)?;
        if let (0, Some(seq)) = (updated, sequence.seq) {
            conn.execute("INSERT INTO sqlite_sequence(name, seq) VALUES (?1, ?2)", (table, seq))
                .map_err(SqlError::from)?;
        }
    }
    Ok(())
}

/// The column count a changeset records for `table`, or None if the table
/// does not exist. Tables without a declared primary key carry the rowid
/// as an extra first column.
fn expected_columns(conn: &Connection, table: &str) -> Result<Option<usize>, SqlError> {
    let n: i64 = conn.query_row("SELECT count(*) FROM pragma_table_info(?1)", [table], |r| r.get(0))?;
    if n == 0 {
        return Ok(None);
    }
    let rowid = usize::from(primary_key(conn, table)?.is_empty());
    Ok(Some(n as usize + rowid))
}

/// Every table the changeset names must exist with the same column count
/// (SQLite would otherwise skip those changes silently).
fn check_tables(conn: &Connection, changes: &[ChangeInfo], index: u64) -> Result<(), ApplyError> {
    let mut seen: HashMap<&str, Option<usize>> = HashMap::new();
    for change in changes {
        let expected = match seen.get(change.table.as_str()) {
            Some(e) => *e,
            None => {
                let e = expected_columns(conn, &change.table)?;
                seen.insert(&change.table, e);
                e
            }
        };
        match expected {
            None => {
                return Err(divergence(
                    index,
                    format!("{} on table {:?}, which does not exist here", session::op_name(change.op), change.table),
                ))
            }
            Some(n) if n != change.columns => {
                return Err(divergence(
                    index,
                    format!("table {:?} has {n} column(s) here but the changeset has {}", change.table, change.columns),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}
