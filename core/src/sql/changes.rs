//! The change stream: the row changes a committed log entry carries, read
//! from the changesets the leader replicated (nothing re-executed, no hook
//! on any replica), as [`Change`]s.
//!
//! A changeset records an INSERT's whole row and a DELETE's whole row, but
//! an UPDATE only by its key and the columns it changed (old and new
//! values): so the images of an UPDATE hold the key and those columns, as
//! PostgreSQL's logical decoding does without `REPLICA IDENTITY FULL`.
//! Column names come from the `Columns` ops the leader puts before a
//! table's first changeset in each request, so they are the names the
//! schema had when the change was made.

use std::collections::{BTreeSet, HashMap};

use deeb_proto::value::Kind;
use deeb_proto::{op, ChangeKind, Command, NamedValue, Value, WriteBatch};
use prost::Message as _;
use rusqlite::ffi;

use super::session::{self, Cell, RowChange};
use super::value::cell_to_proto;

pub use deeb_proto::Change;

/// Which changes a stream delivers.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Lower-cased table names; empty means every table.
    tables: BTreeSet<String>,
    before_images: bool,
}

impl Filter {
    /// Changes to `tables` (all if empty, case-insensitive), with the
    /// before images of updates and deletes if `before_images`.
    pub fn new(tables: &[String], before_images: bool) -> Self {
        Self { tables: tables.iter().map(|table| table.to_lowercase()).collect(), before_images }
    }

    fn wants(&self, table: &str) -> bool {
        self.tables.is_empty() || self.tables.contains(&table.to_lowercase())
    }
}

/// The changes of the committed entry at `index` whose payload is `data`
/// (a `Command`; an empty payload, a new leader's first entry, has none),
/// in log order.
///
/// # Errors
/// The payload or a changeset in it cannot be decoded.
pub fn entry_changes(index: u64, term: u64, data: &[u8], filter: &Filter) -> Result<Vec<Change>, String> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let command = Command::decode(data).map_err(|error| format!("entry {index}: undecodable command: {error}"))?;
    let Some(deeb_proto::command::Kind::WriteBatch(batch)) = command.kind else {
        return Err(format!("entry {index}: a command of an unknown kind"));
    };
    batch_changes(index, term, &batch, filter).map_err(|error| format!("entry {index}: {error}"))
}

fn batch_changes(index: u64, term: u64, batch: &WriteBatch, filter: &Filter) -> rusqlite::Result<Vec<Change>> {
    let mut out = Vec::new();
    for (request, write) in batch.writes.iter().enumerate() {
        let first = out.len();
        let template = Change {
            index,
            term,
            timestamp_unix_ms: batch.proposed_unix_ms,
            request: u32::try_from(request).unwrap_or(u32::MAX),
            ..Change::default()
        };
        let mut columns: HashMap<&str, &[String]> = HashMap::new();
        for kind in write.ops.iter().filter_map(|op| op.kind.as_ref()) {
            match kind {
                op::Kind::Columns(named) => {
                    columns.insert(&named.table, &named.names);
                }
                op::Kind::Ddl(sql) => {
                    out.push(Change { kind: ChangeKind::Ddl.into(), sql: sql.clone(), ..template.clone() });
                }
                op::Kind::Changeset(changeset) => {
                    for change in session::row_changes(changeset)? {
                        if filter.wants(&change.table) {
                            let names = columns.get(change.table.as_str()).copied();
                            out.push(row_change(change, names, filter.before_images, &template));
                        }
                    }
                }
                op::Kind::Sequences(_) | op::Kind::Rowids(_) | op::Kind::Mysql(_) | op::Kind::MysqlCheck(_) => {}
            }
        }
        if let Some(part) = write.restore.as_ref().filter(|part| part.last) {
            out.push(Change { kind: ChangeKind::Restore.into(), sql: part.id.clone(), ..template.clone() });
        }
        let request_changes = &mut out[first..];
        for (position, change) in request_changes.iter_mut().enumerate() {
            change.position = u32::try_from(position).unwrap_or(u32::MAX);
        }
        if let Some(last) = request_changes.last_mut() {
            last.last_in_request = true;
        }
    }
    Ok(out)
}

/// One row change; columns are named by `names` when it has one name per
/// column, else `column1`, `column2`, ... (entries written before deeb
/// carried names).
fn row_change(change: RowChange, names: Option<&[String]>, before_images: bool, template: &Change) -> Change {
    let names: Vec<String> = match names {
        Some(names) if names.len() == change.key.len() => names.to_vec(),
        _ => (1..=change.key.len()).map(|n| format!("column{n}")).collect(),
    };
    let named = |values: &[Option<Cell>], keep: &dyn Fn(usize) -> bool| -> Vec<NamedValue> {
        values
            .iter()
            .enumerate()
            .filter(|(column, value)| value.is_some() && keep(*column))
            .map(|(column, value)| NamedValue { name: names[column].clone(), value: value.as_ref().map(value_of) })
            .collect()
    };
    let is_key = |column: usize| change.key[column];
    let (kind, key, before, after) = match change.op {
        ffi::SQLITE_INSERT => {
            (ChangeKind::Insert, named(&change.new, &is_key), Vec::new(), named(&change.new, &|_| true))
        }
        ffi::SQLITE_DELETE => {
            (ChangeKind::Delete, named(&change.old, &is_key), named(&change.old, &|_| true), Vec::new())
        }
        _ => {
            // An UPDATE never changes its key (a changed key is a DELETE
            // and an INSERT): the key is in the old record only.
            let key = named(&change.old, &is_key);
            let mut after = key.clone();
            after.extend(named(&change.new, &|column| !change.key[column]));
            (ChangeKind::Update, key, named(&change.old, &|_| true), after)
        }
    };
    let before = if before_images { before } else { Vec::new() };
    Change { kind: kind.into(), table: change.table, key, before, after, ..template.clone() }
}

/// A stored value as a proto value (text that is not UTF-8, lossily).
fn value_of(cell: &Cell) -> Value {
    match cell {
        Cell::Text(text) => Value { kind: Some(Kind::Text(String::from_utf8_lossy(text).into_owned())) },
        other => cell_to_proto(other).unwrap_or_default(),
    }
}
