//! Hidden rowids, replicated.
//!
//! A rowid table keyed by something other than an `INTEGER PRIMARY KEY`
//! still numbers its rows by rowid, and a scan visits them in that order:
//! `SELECT ... LIMIT 3` without `ORDER BY`, `group_concat` and the rows a
//! `DELETE ... WHERE k IN (SELECT k FROM t LIMIT 3)` picks all follow it. A
//! changeset is keyed by the declared key and carries no rowid; applying it
//! numbers new rows in the changeset's own (hash) order, and `INSERT OR
//! REPLACE` renumbers a row on the leader that an applied UPDATE keeps. So
//! the leader sends, after a statement's changesets, the rowid of every row
//! they insert or update in such tables ([`leader_rowids`]), and a replica
//! renumbers its rows to match ([`apply_rowids`]).

use std::collections::BTreeSet;

use deeb_proto::{KeyedRowid, Rowids, TableRowids};
use rusqlite::{params_from_iter, Connection};

use super::session::{self, Cell, ChangedKey};
use super::value;
use super::{ApplyError, SqlError};

/// The keys, in order, that a statement's changesets insert or update in
/// `table`.
fn keys_of<'k>(keys: &'k [ChangedKey], table: &str) -> Vec<&'k ChangedKey> {
    keys.iter().filter(|k| k.table.eq_ignore_ascii_case(table)).collect()
}

/// Finds one row's rowid by its declared key.
struct RowidLookup {
    sql: String,
}

impl RowidLookup {
    /// For `table`, keyed by the columns at `columns` (positions in the
    /// table's column order, as a changeset numbers them).
    fn new(conn: &Connection, table: &str, columns: &[usize]) -> Result<Self, SqlError> {
        let names = column_names(conn, table)?;
        let condition = columns
            .iter()
            .enumerate()
            .map(|(n, col)| {
                let name = names.get(*col).ok_or_else(|| SqlError::Other(format!("no column {col} in {table:?}")))?;
                Ok(format!("{} IS ?{}", quote(name), n + 1))
            })
            .collect::<Result<Vec<_>, SqlError>>()?
            .join(" AND ");
        Ok(RowidLookup { sql: format!("SELECT _rowid_ FROM main.{} WHERE {condition}", quote(table)) })
    }

    fn rowid(&self, conn: &Connection, key: &ChangedKey) -> Result<Option<i64>, SqlError> {
        let mut statement = conn.prepare_cached(&self.sql)?;
        let mut rows = statement.query(params_from_iter(key.values.iter()))?;
        Ok(match rows.next()? {
            Some(row) => Some(row.get(0)?),
            None => None,
        })
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What the leader sends after a statement.
pub(crate) enum LeaderRowids {
    /// The op to send, if the statement numbered any row of a hidden-rowid
    /// table.
    Op(Option<Rowids>),
    /// A re-inserted row's key has text that is not UTF-8 (the op carries
    /// keys as proto values): the statement must be replayed instead.
    Unrepresentable,
}

/// Leader, after a statement: the rowids its changesets' inserted and
/// updated rows hold in tables of `hidden` (lower-case names), and the keys
/// and rowids of the other rows it inserted or updated (`written`, from the
/// update hook: rows deleted and inserted again with the same values, or
/// moved by `UPDATE OR REPLACE` onto a deleted row's key with the same
/// values, which no changeset shows).
pub(crate) fn leader_rowids(
    conn: &Connection,
    hidden: &BTreeSet<String>,
    changesets: &[&[u8]],
    written: &[(String, i64)],
) -> Result<LeaderRowids, SqlError> {
    if hidden.is_empty() {
        return Ok(LeaderRowids::Op(None));
    }
    let keys = session::changed_keys(changesets, |table| hidden.contains(&table.to_lowercase()))?;
    let mut tables: BTreeSet<String> = keys.iter().map(|k| k.table.to_lowercase()).collect();
    tables.extend(written.iter().map(|(table, _)| table.to_lowercase()));
    let mut out = Rowids::default();
    for table in tables {
        let keys = keys_of(&keys, &table);
        let columns = key_columns(conn, &table)?;
        let lookup = RowidLookup::new(conn, &table, &columns)?;
        let rowids = keys
            .iter()
            .map(|key| {
                lookup
                    .rowid(conn, key)?
                    .ok_or_else(|| SqlError::Other(format!("a row of {table:?} just written is gone")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let covered: BTreeSet<i64> = rowids.iter().copied().collect();
        let extra: BTreeSet<i64> = written
            .iter()
            .filter(|(t, rowid)| t.eq_ignore_ascii_case(&table) && !covered.contains(rowid))
            .map(|(_, rowid)| *rowid)
            .collect();
        let mut keyed = Vec::new();
        let by_rowid = (!extra.is_empty()).then(|| KeyByRowid::new(conn, &table, &columns)).transpose()?;
        for rowid in extra {
            let Some(key) = by_rowid.as_ref().expect("built when there are extra rows").key(conn, rowid)? else {
                continue;
            };
            let Some(key) = key.iter().map(value::cell_to_proto).collect::<Option<Vec<_>>>() else {
                return Ok(LeaderRowids::Unrepresentable);
            };
            keyed.push(KeyedRowid { key, rowid });
        }
        if !rowids.is_empty() || !keyed.is_empty() {
            out.tables.push(TableRowids { table, rowids, keyed });
        }
    }
    Ok(LeaderRowids::Op((!out.tables.is_empty()).then_some(out)))
}

/// The positions (in the table's column order) of `table`'s key columns.
fn key_columns(conn: &Connection, table: &str) -> Result<Vec<usize>, SqlError> {
    let mut statement = conn.prepare("SELECT pk FROM pragma_table_info(?1) ORDER BY cid")?;
    let pk: Vec<i64> = statement.query_map([table], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(pk.iter().enumerate().filter(|(_, pk)| **pk > 0).map(|(position, _)| position).collect())
}

/// Finds a row's key by its rowid (the statement built once per table).
struct KeyByRowid {
    sql: String,
    width: usize,
}

impl KeyByRowid {
    fn new(conn: &Connection, table: &str, columns: &[usize]) -> Result<Self, SqlError> {
        let names = column_names(conn, table)?;
        let selected: Vec<String> = columns.iter().map(|c| quote(&names[*c])).collect();
        let sql = format!("SELECT {} FROM main.{} WHERE _rowid_ = ?1", selected.join(", "), quote(table));
        Ok(KeyByRowid { sql, width: columns.len() })
    }

    /// The key of the row numbered `rowid`, if there is one.
    fn key(&self, conn: &Connection, rowid: i64) -> Result<Option<Vec<Cell>>, SqlError> {
        let mut statement = conn.prepare_cached(&self.sql)?;
        let mut rows = statement.query([rowid])?;
        let Some(row) = rows.next()? else { return Ok(None) };
        (0..self.width).map(|i| Ok(Cell::from(row.get_ref(i)?))).collect::<Result<Vec<_>, SqlError>>().map(Some)
    }
}

fn column_names(conn: &Connection, table: &str) -> Result<Vec<String>, SqlError> {
    let mut statement = conn.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
    let names = statement.query_map([table], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(names)
}

/// Replica (or the leader replaying a statement): renumbers the rows the
/// preceding `changesets` inserted or updated to the leader's rowids. Rows
/// that already match are left alone; the others move in two steps, first
/// above (or below) every rowid in use, so no move meets a row still to
/// move. A row the replica lacks, a count that does not match, or a rowid
/// another row holds is divergence.
pub(crate) fn apply_rowids(
    conn: &Connection,
    changesets: &[&[u8]],
    rowids: &Rowids,
    index: u64,
) -> Result<(), ApplyError> {
    let divergence = |reason: String| ApplyError::Divergence { index, reason };
    let named: BTreeSet<String> = rowids.tables.iter().map(|t| t.table.to_lowercase()).collect();
    let keys =
        session::changed_keys(changesets, |table| named.contains(&table.to_lowercase())).map_err(SqlError::from)?;
    for TableRowids { table, rowids, keyed } in &rowids.tables {
        let keys = keys_of(&keys, table);
        if keys.len() != rowids.len() {
            return Err(divergence(format!(
                "{} rowid(s) for table {table:?} but its changesets insert or update {} row(s)",
                rowids.len(),
                keys.len()
            )));
        }
        let columns = key_columns(conn, table)?;
        let lookup = RowidLookup::new(conn, table, &columns)?;
        let mut targets: Vec<(ChangedKey, i64)> =
            keys.iter().zip(rowids).map(|(key, r)| ((*key).clone(), *r)).collect();
        for KeyedRowid { key, rowid } in keyed {
            if key.len() != columns.len() {
                return Err(divergence(format!("a key of {} value(s) for table {table:?}", key.len())));
            }
            let values = key.iter().map(value::proto_to_cell).collect();
            targets.push((ChangedKey { table: table.clone(), values }, *rowid));
        }
        let mut moves = Vec::new();
        for (key, target) in &targets {
            match lookup.rowid(conn, key)? {
                Some(current) if current == *target => {}
                Some(current) => moves.push((current, *target)),
                None => return Err(divergence(format!("a row of table {table:?} the leader numbered is missing"))),
            }
        }
        if moves.is_empty() {
            continue;
        }
        let (low, high): (Option<i64>, Option<i64>) = conn
            .query_row(&format!("SELECT min(_rowid_), max(_rowid_) FROM main.{}", quote(table)), [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(SqlError::from)?;
        let targets = moves.iter().map(|(_, target)| *target);
        let high = targets.clone().chain(high).max().unwrap_or(0);
        let low = targets.chain(low).min().unwrap_or(0);
        let n = i64::try_from(moves.len()).unwrap_or(i64::MAX);
        let temporary = |i: i64| match high.checked_add(n) {
            Some(_) => high + 1 + i,
            None => low - 1 - i,
        };
        if high.checked_add(n).is_none() && low.checked_sub(n).is_none() {
            return Err(divergence(format!("no free rowids to renumber table {table:?} through")));
        }
        let renumber = format!("UPDATE main.{} SET _rowid_ = ?2 WHERE _rowid_ = ?1", quote(table));
        let mut statement = conn.prepare_cached(&renumber).map_err(SqlError::from)?;
        let steps = moves.iter().enumerate().map(|(i, (current, _))| (*current, temporary(i as i64)));
        let steps: Vec<(i64, i64)> =
            steps.chain(moves.iter().enumerate().map(|(i, (_, target))| (temporary(i as i64), *target))).collect();
        for (from, to) in steps {
            match statement.execute([from, to]) {
                Ok(1) => {}
                Ok(n) => return Err(divergence(format!("renumbering rowid {from} of table {table:?} moved {n} rows"))),
                Err(e) if !super::state_machine::is_fatal(&e) => {
                    return Err(divergence(format!("renumbering rowid {from} of table {table:?} to {to} failed: {e}")))
                }
                Err(e) => return Err(ApplyError::Sql(e.into())),
            }
        }
    }
    Ok(())
}
