//! A deterministic, ordered hash of a database's schema and rows.

use rusqlite::types::ValueRef;
use rusqlite::Connection;

/// 64-bit FNV-1a, stable across platforms and Rust versions.
pub(crate) struct Fnv64(u64);

impl Fnv64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub(crate) fn new() -> Self {
        Fnv64(Self::OFFSET)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    /// Writes a length-prefixed byte string (so concatenations differ).
    pub(crate) fn write_bytes(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }

    /// Writes one SQL value with a type tag.
    pub(crate) fn write_value(&mut self, value: ValueRef<'_>) {
        match value {
            ValueRef::Null => self.write(&[0]),
            ValueRef::Integer(i) => {
                self.write(&[1]);
                self.write(&i.to_le_bytes());
            }
            ValueRef::Real(r) => {
                self.write(&[2]);
                self.write(&r.to_bits().to_le_bytes());
            }
            ValueRef::Text(t) => {
                self.write(&[3]);
                self.write_bytes(t);
            }
            ValueRef::Blob(b) => {
                self.write(&[4]);
                self.write_bytes(b);
            }
        }
    }
}

/// The name of the table excluded from digests (per-replica bookkeeping).
const META: &str = "_deeb_meta";

/// Quotes an identifier for SQL.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Hashes the schema, then every table's rows in a canonical order.
pub(crate) fn digest(conn: &Connection) -> rusqlite::Result<u64> {
    let mut h = Fnv64::new();
    hash_query(
        conn,
        &mut h,
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name <> ?1 ORDER BY type, name",
        META,
    )?;
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name <> ?1 ORDER BY name")?
        .query_map([META], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for table in tables {
        h.write(b"T");
        h.write_bytes(table.as_bytes());
        let sql = ordered_select(conn, &table)?;
        hash_query(conn, &mut h, &sql, "")?;
    }
    Ok(h.finish())
}

/// `SELECT` of all rows of `table` in a replica-independent order.
fn ordered_select(conn: &Connection, table: &str) -> rusqlite::Result<String> {
    let q = quote_ident(table);
    if table.eq_ignore_ascii_case("sqlite_sequence") {
        return Ok(format!("SELECT name, seq FROM {q} ORDER BY name"));
    }
    let without_rowid: bool =
        conn.query_row("SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1", [table], |r| r.get(0))?;
    Ok(if without_rowid {
        let pk = primary_key(conn, table)?;
        let cols: Vec<String> = pk.iter().map(|c| quote_ident(c)).collect();
        format!("SELECT * FROM {q} ORDER BY {}", cols.join(", "))
    } else {
        // Every rowid is replicated (the hidden ones too, see
        // `super::rowids`), so hash it too.
        format!("SELECT _rowid_, * FROM {q} ORDER BY _rowid_")
    })
}

/// The declared primary key columns of `table`, in key order.
pub(crate) fn primary_key(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name, pk FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk")?;
    let cols = stmt.query_map([table], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<_>>()?;
    Ok(cols)
}

/// Hashes every row of a query (with an optional single text parameter).
fn hash_query(conn: &Connection, h: &mut Fnv64, sql: &str, param: &str) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(sql)?;
    let columns = stmt.column_count();
    let mut rows = if stmt.parameter_count() == 1 { stmt.query([param])? } else { stmt.query([])? };
    while let Some(row) = rows.next()? {
        h.write(b"R");
        for i in 0..columns {
            h.write_value(row.get_ref(i)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_vector() {
        let mut h = Fnv64::new();
        h.write(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c);
    }
}
