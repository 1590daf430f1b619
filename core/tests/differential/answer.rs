//! What a request or query produced, in a form both the reference and
//! deeb's answers convert to.

use deeb_proto::{value, Value};
use rusqlite::types::ValueRef;

/// One statement's outcome as deeb reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementResult {
    pub rows_affected: u64,
    pub last_insert_id: i64,
    /// The rows it returned (RETURNING, a SELECT in a write), sorted: the
    /// order of rows a statement visits is not what is compared.
    pub returned: Vec<Vec<Cell>>,
}

/// A write request's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Done(Vec<StatementResult>),
    /// `statement_index` is None when the request failed as a whole (at
    /// commit, or refused before any statement ran).
    Failed {
        statement_index: Option<usize>,
        message: String,
    },
}

/// One SQL value (reals compared bit for bit).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cell {
    Null,
    Integer(i64),
    Real(u64),
    Text(String),
    Blob(Vec<u8>),
}

/// A query's rows, or its error message.
pub type Rows = Result<Vec<Vec<Cell>>, String>;

impl Cell {
    pub fn from_sql(value: ValueRef<'_>) -> Cell {
        match value {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(i) => Cell::Integer(i),
            ValueRef::Real(r) => Cell::Real(r.to_bits()),
            ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
        }
    }

    pub fn from_proto(value: &Value) -> Cell {
        match &value.kind {
            None => Cell::Null,
            Some(value::Kind::Integer(i)) => Cell::Integer(*i),
            Some(value::Kind::Real(r)) => Cell::Real(r.to_bits()),
            Some(value::Kind::Text(t)) => Cell::Text(t.clone()),
            Some(value::Kind::Blob(b)) => Cell::Blob(b.to_vec()),
        }
    }
}

/// Rows in a canonical order (a query without ORDER BY may return them in
/// any order), errors kept as they are.
pub fn sorted(rows: &Rows) -> Rows {
    rows.clone().map(|mut rows| {
        rows.sort();
        rows
    })
}

/// A short description of rows for a report (large values elided).
pub fn describe(rows: &Rows) -> String {
    match rows {
        Err(message) => format!("error: {message}"),
        Ok(rows) => {
            let shown: Vec<String> = rows.iter().take(8).map(|row| describe_row(row)).collect();
            let more = if rows.len() > 8 { format!(" ... ({} rows)", rows.len()) } else { String::new() };
            format!("[{}]{more}", shown.join(", "))
        }
    }
}

fn describe_row(row: &[Cell]) -> String {
    let cells: Vec<String> = row
        .iter()
        .map(|cell| match cell {
            Cell::Null => "NULL".to_owned(),
            Cell::Integer(i) => i.to_string(),
            Cell::Real(bits) => f64::from_bits(*bits).to_string(),
            Cell::Text(t) if t.len() > 40 => {
                format!("'{}...' ({} bytes)", t.chars().take(20).collect::<String>(), t.len())
            }
            Cell::Text(t) => format!("'{t}'"),
            Cell::Blob(b) => format!("blob({} bytes)", b.len()),
        })
        .collect();
    format!("({})", cells.join(", "))
}
