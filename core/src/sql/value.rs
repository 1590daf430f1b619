//! Conversions between proto [`Value`]s and SQLite values, and parameter
//! binding.

use deeb_proto::value::Kind;
use deeb_proto::{Statement, Value};
use rusqlite::types::{ToSqlOutput, ValueRef};

use super::session::Cell;

/// A proto value as a SQLite value (None kind = NULL).
pub fn to_sql(value: &Value) -> ToSqlOutput<'_> {
    ToSqlOutput::Borrowed(match &value.kind {
        None => ValueRef::Null,
        Some(Kind::Integer(i)) => ValueRef::Integer(*i),
        Some(Kind::Real(r)) => ValueRef::Real(*r),
        Some(Kind::Text(t)) => ValueRef::Text(t.as_bytes()),
        Some(Kind::Blob(b)) => ValueRef::Blob(b),
    })
}

/// A SQLite value as a proto value. Non-UTF-8 text is converted lossily.
pub fn from_sql(value: ValueRef<'_>) -> Value {
    let kind = match value {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(Kind::Integer(i)),
        ValueRef::Real(r) => Some(Kind::Real(r)),
        ValueRef::Text(t) => Some(Kind::Text(String::from_utf8_lossy(t).into_owned())),
        ValueRef::Blob(b) => Some(Kind::Blob(b.to_vec())),
    };
    Value { kind }
}

/// A stored value as a proto value; None for text that is not UTF-8
/// (a proto string cannot carry it).
pub(crate) fn cell_to_proto(cell: &Cell) -> Option<Value> {
    let kind = match cell {
        Cell::Null => None,
        Cell::Integer(i) => Some(Kind::Integer(*i)),
        Cell::Real(r) => Some(Kind::Real(*r)),
        Cell::Text(t) => Some(Kind::Text(String::from_utf8(t.clone()).ok()?)),
        Cell::Blob(b) => Some(Kind::Blob(b.clone())),
    };
    Some(Value { kind })
}

/// A proto value as a stored value.
pub(crate) fn proto_to_cell(value: &Value) -> Cell {
    match &value.kind {
        None => Cell::Null,
        Some(Kind::Integer(i)) => Cell::Integer(*i),
        Some(Kind::Real(r)) => Cell::Real(*r),
        Some(Kind::Text(t)) => Cell::Text(t.as_bytes().to_vec()),
        Some(Kind::Blob(b)) => Cell::Blob(b.clone()),
    }
}

/// Approximate encoded size of a value, for chunking.
pub(crate) fn approx_size(value: &Value) -> usize {
    match &value.kind {
        None => 1,
        Some(Kind::Integer(_)) | Some(Kind::Real(_)) => 9,
        Some(Kind::Text(t)) => t.len() + 3,
        Some(Kind::Blob(b)) => b.len() + 3,
    }
}

/// Binds the statement's parameters (positional or named, not both).
/// Returns the client-facing message on failure.
pub(crate) fn bind(stmt: &mut rusqlite::Statement<'_>, statement: &Statement) -> Result<(), String> {
    let expected = stmt.parameter_count();
    if !statement.params.is_empty() && !statement.named_params.is_empty() {
        return Err("use positional or named parameters, not both".to_string());
    }
    if !statement.named_params.is_empty() {
        return bind_named(stmt, statement, expected);
    }
    if statement.params.len() != expected {
        return Err(format!("statement expects {expected} parameter(s), {} given", statement.params.len()));
    }
    for (i, value) in statement.params.iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, to_sql(value)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn bind_named(stmt: &mut rusqlite::Statement<'_>, statement: &Statement, expected: usize) -> Result<(), String> {
    if statement.named_params.len() != expected {
        return Err(format!("statement expects {expected} parameter(s), {} named given", statement.named_params.len()));
    }
    for named in &statement.named_params {
        let index = stmt
            .parameter_index(&named.name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no parameter named {:?}", named.name))?;
        let null = Value::default();
        let value = named.value.as_ref().unwrap_or(&null);
        stmt.raw_bind_parameter(index, to_sql(value)).map_err(|e| e.to_string())?;
    }
    Ok(())
}
