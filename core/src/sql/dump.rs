//! A database as SQL text, like `sqlite3`'s `.dump`: the schema, every row
//! as an INSERT, then indexes, triggers and views, in one transaction.
//! Written row by row to any `Write` (never whole in memory). deeb's own
//! `_deeb_*` tables are left out: the text loads into plain SQLite or,
//! through the write path, into another deeb.

use std::io::Write;

use rusqlite::types::ValueRef;
use rusqlite::Connection;

/// Why a dump stopped.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("reading the database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("writing the dump: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes the database `conn` holds (read in one transaction) as SQL text.
///
/// # Errors
/// Reading the database or writing `out` failed.
pub fn dump(conn: &Connection, out: &mut dyn Write) -> Result<(), DumpError> {
    conn.execute_batch("BEGIN")?;
    let result = dump_in_transaction(conn, out);
    conn.execute_batch("COMMIT")?;
    result
}

fn dump_in_transaction(conn: &Connection, out: &mut dyn Write) -> Result<(), DumpError> {
    writeln!(out, "PRAGMA foreign_keys=OFF;")?;
    writeln!(out, "BEGIN TRANSACTION;")?;
    let mut tables = Vec::new();
    {
        let mut schema = conn.prepare(
            "SELECT name, sql FROM sqlite_schema WHERE type = 'table' AND sql IS NOT NULL \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_deeb\\_%' ESCAPE '\\' ORDER BY rowid",
        )?;
        let mut rows = schema.query([])?;
        while let Some(row) = rows.next()? {
            let (name, sql): (String, String) = (row.get(0)?, row.get(1)?);
            writeln!(out, "{sql};")?;
            tables.push(name);
        }
    }
    for table in &tables {
        dump_rows(conn, table, out)?;
    }
    let has_sequence: bool =
        conn.query_row("SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'sqlite_sequence'", [], |row| row.get(0))?;
    if has_sequence {
        writeln!(out, "DELETE FROM sqlite_sequence;")?;
        let mut sequences =
            conn.prepare("SELECT name, seq FROM sqlite_sequence WHERE name NOT LIKE '\\_deeb\\_%' ESCAPE '\\'")?;
        let mut rows = sequences.query([])?;
        while let Some(row) = rows.next()? {
            let (name, seq): (String, i64) = (row.get(0)?, row.get(1)?);
            writeln!(out, "INSERT INTO sqlite_sequence VALUES({},{seq});", literal_text(name.as_bytes()))?;
        }
    }
    let mut rest = conn.prepare(
        "SELECT sql FROM sqlite_schema WHERE type IN ('index', 'trigger', 'view') AND sql IS NOT NULL \
         AND tbl_name NOT LIKE '\\_deeb\\_%' ESCAPE '\\' ORDER BY CASE type WHEN 'index' THEN 0 WHEN 'view' THEN 1 \
         ELSE 2 END, rowid",
    )?;
    let mut rows = rest.query([])?;
    while let Some(row) = rows.next()? {
        let sql: String = row.get(0)?;
        writeln!(out, "{sql};")?;
    }
    writeln!(out, "COMMIT;")?;
    Ok(())
}

/// One INSERT per row, naming the columns that can be inserted (not
/// generated ones).
fn dump_rows(conn: &Connection, table: &str, out: &mut dyn Write) -> Result<(), DumpError> {
    let mut columns = Vec::new();
    {
        let mut info = conn.prepare(&format!("PRAGMA table_xinfo({})", identifier(table)))?;
        let mut rows = info.query([])?;
        while let Some(row) = rows.next()? {
            let (name, hidden): (String, i64) = (row.get(1)?, row.get(6)?);
            // 2 and 3: generated columns (1: a virtual table's hidden column).
            if hidden == 0 {
                columns.push(identifier(&name));
            }
        }
    }
    if columns.is_empty() {
        return Ok(());
    }
    let list = columns.join(",");
    let mut select = conn.prepare(&format!("SELECT {list} FROM {}", identifier(table)))?;
    let mut rows = select.query([])?;
    let mut line = String::new();
    while let Some(row) = rows.next()? {
        line.clear();
        line.push_str(&format!("INSERT INTO {}({list}) VALUES(", identifier(table)));
        for at in 0..columns.len() {
            if at > 0 {
                line.push(',');
            }
            line.push_str(&literal(row.get_ref(at)?));
        }
        line.push_str(");");
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `name` as a quoted SQL identifier.
fn identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A value as an SQL literal that reads back as the same value and type.
fn literal(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Null => "NULL".to_owned(),
        ValueRef::Integer(integer) => integer.to_string(),
        ValueRef::Real(real) if real.is_nan() => "NULL".to_owned(),
        ValueRef::Real(real) if real.is_infinite() => if real > 0.0 { "1e999" } else { "-1e999" }.to_owned(),
        // Rust prints the shortest text that reads back as the same f64,
        // with a decimal point or exponent so SQLite reads a REAL.
        ValueRef::Real(real) => format!("{real:?}"),
        ValueRef::Text(text) => literal_text(text),
        ValueRef::Blob(blob) => format!("X'{}'", hex(blob)),
    }
}

/// Text as a quoted literal; text SQL cannot quote (a NUL, or bytes that
/// are not UTF-8) as its bytes cast to TEXT.
fn literal_text(text: &[u8]) -> String {
    match std::str::from_utf8(text) {
        Ok(text) if !text.contains('\0') => format!("'{}'", text.replace('\'', "''")),
        _ => format!("CAST(X'{}' AS TEXT)", hex(text)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of every user table, in a canonical order, with each
    /// value's type: what a dump must carry.
    fn contents(conn: &Connection) -> Vec<String> {
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE '\\_deeb\\_%' ESCAPE '\\' ORDER BY name")
            .expect("schema")
            .query_map([], |row| row.get(0))
            .expect("tables")
            .collect::<Result<_, _>>()
            .expect("names");
        let mut seen = Vec::new();
        for table in tables {
            let sql = format!("SELECT * FROM {}", identifier(&table));
            let mut select = conn.prepare(&sql).expect("select");
            let width = select.column_count();
            let mut rows = select.query([]).expect("rows");
            while let Some(row) = rows.next().expect("row") {
                let cells: Vec<String> = (0..width).map(|at| format!("{:?}", row.get_ref(at).expect("cell"))).collect();
                seen.push(format!("{table}: {}", cells.join(" | ")));
            }
        }
        let mut schema: Vec<String> = conn
            .prepare("SELECT type || ' ' || name FROM sqlite_schema WHERE name NOT LIKE '\\_deeb\\_%' ESCAPE '\\' ORDER BY 1")
            .expect("schema")
            .query_map([], |row| row.get(0))
            .expect("objects")
            .collect::<Result<_, _>>()
            .expect("names");
        seen.sort();
        seen.append(&mut schema);
        seen
    }

    #[test]
    fn a_dump_loads_back_into_the_same_rows_types_and_schema() {
        let source = Connection::open_in_memory().expect("open");
        source
            .execute_batch(
                "CREATE TABLE parent (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE);
                 CREATE TABLE \"odd \"\"name\"\"\" (k INTEGER PRIMARY KEY, v, doubled INT AS (k * 2) STORED,
                     tripled INT AS (k * 3) VIRTUAL, parent INTEGER REFERENCES parent(id) ON DELETE CASCADE);
                 CREATE TABLE keyed (a TEXT, b BLOB, PRIMARY KEY (a, b)) WITHOUT ROWID;
                 CREATE TABLE _deeb_internal (x);
                 INSERT INTO _deeb_internal VALUES (1);
                 INSERT INTO parent (name) VALUES ('it''s'), ('line
break'), ('ünïcödé ✓');
                 DELETE FROM parent WHERE id = 3;
                 INSERT INTO \"odd \"\"name\"\"\" (k, v, parent) VALUES
                     (1, NULL, 1), (2, 42, 1), (3, -9223372036854775808, 2), (4, 0.1, NULL), (5, 1e300, NULL),
                     (6, -0.0, NULL), (7, 9e999, NULL), (8, -9e999, NULL), (9, x'00ff10', NULL), (10, '', NULL),
                     (11, CAST(x'610062' AS TEXT), NULL), (12, 'x''y', NULL), (13, 3.0, NULL), (14, 1.5e-300, NULL);
                 INSERT INTO keyed VALUES ('k', x''), ('k', x'01');
                 CREATE INDEX odd_v ON \"odd \"\"name\"\"\" (v);
                 CREATE VIEW names AS SELECT name FROM parent;
                 CREATE TRIGGER parent_gone AFTER DELETE ON parent BEGIN
                     INSERT INTO keyed VALUES ('gone', CAST(old.id AS BLOB)); END;",
            )
            .expect("fill");
        let mut text = Vec::new();
        dump(&source, &mut text).expect("dump");
        let text = String::from_utf8(text).expect("utf-8");
        assert!(!text.contains("_deeb_internal"), "deeb's tables stay out:\n{text}");
        let copy = Connection::open_in_memory().expect("open");
        copy.execute_batch(&text).expect("the dump loads");
        assert_eq!(contents(&copy), contents(&source), "dump:\n{text}");
        let sequence: i64 = copy.query_row("SELECT seq FROM sqlite_sequence", [], |row| row.get(0)).expect("seq");
        assert_eq!(sequence, 3, "AUTOINCREMENT goes on after the deleted row's id");
        // The trigger came along: it fires in the copy.
        copy.execute("DELETE FROM parent WHERE id = 1", []).expect("delete");
        let fired: i64 =
            copy.query_row("SELECT count(*) FROM keyed WHERE a = 'gone'", [], |row| row.get(0)).expect("n");
        assert_eq!(fired, 1);
    }

    #[test]
    fn a_checker_that_ignores_types_would_pass_a_bad_copy() {
        // The comparison above is of typed values: 3.0 and 3 differ, as do
        // '1' and 1, so a dump that lost a type would fail it.
        let a = Connection::open_in_memory().expect("open");
        let b = Connection::open_in_memory().expect("open");
        a.execute_batch("CREATE TABLE t (v); INSERT INTO t VALUES (3.0);").expect("a");
        b.execute_batch("CREATE TABLE t (v); INSERT INTO t VALUES (3);").expect("b");
        assert_ne!(contents(&a), contents(&b));
    }
}
