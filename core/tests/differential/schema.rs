//! The current schema of a database, read back from SQLite itself (so the
//! generator never has to model which DDL succeeded).

use rusqlite::Connection;

#[derive(Clone, Debug)]
pub struct Column {
    pub name: String,
    pub declared_type: String,
    pub not_null: bool,
    /// Position in the primary key (0 if not part of it).
    pub primary_key: usize,
    pub generated: bool,
}

#[derive(Clone, Debug)]
pub struct ForeignKey {
    pub parent: String,
}

#[derive(Clone, Debug)]
pub struct Table {
    pub name: String,
    pub columns: Vec<Column>,
    pub without_rowid: bool,
    pub strict: bool,
    pub autoincrement: bool,
    pub foreign_keys: Vec<ForeignKey>,
}

#[derive(Clone, Debug, Default)]
pub struct Schema {
    pub tables: Vec<Table>,
    /// View name and its column names.
    pub views: Vec<(String, Vec<String>)>,
    pub indexes: Vec<String>,
    pub triggers: Vec<String>,
}

impl Table {
    /// Columns a client may write (not generated).
    pub fn writable(&self) -> Vec<&Column> {
        self.columns.iter().filter(|column| !column.generated).collect()
    }

    /// The primary key columns in key order (empty: rowid only).
    pub fn key(&self) -> Vec<&Column> {
        let mut key: Vec<&Column> = self.columns.iter().filter(|column| column.primary_key > 0).collect();
        key.sort_by_key(|column| column.primary_key);
        key
    }
}

impl Schema {
    /// Reads the user schema of `main` (`_deeb_*` and `sqlite_*` excluded).
    pub fn read(conn: &Connection) -> rusqlite::Result<Schema> {
        let names = |kind: &str| -> rusqlite::Result<Vec<(String, String)>> {
            let mut statement = conn.prepare(
                "SELECT name, coalesce(sql, '') FROM main.sqlite_master WHERE type = ?1 \
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_deeb\\_%' ESCAPE '\\' ORDER BY name",
            )?;
            let rows = statement.query_map([kind], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        };
        let mut schema = Schema::default();
        for (name, sql) in names("table")? {
            schema.tables.push(read_table(conn, name, &sql)?);
        }
        for (name, _) in names("view")? {
            // A view over a dropped table cannot be described: no columns.
            let columns = column_names(conn, &name).unwrap_or_default();
            schema.views.push((name, columns));
        }
        schema.indexes = names("index")?.into_iter().map(|(name, _)| name).collect();
        schema.triggers = names("trigger")?.into_iter().map(|(name, _)| name).collect();
        Ok(schema)
    }
}

fn read_table(conn: &Connection, name: String, sql: &str) -> rusqlite::Result<Table> {
    let mut statement = conn.prepare("SELECT name, type, \"notnull\", pk, hidden FROM pragma_table_xinfo(?1)")?;
    let columns = statement
        .query_map([&name], |row| {
            Ok(Column {
                name: row.get(0)?,
                declared_type: row.get(1)?,
                not_null: row.get::<_, i64>(2)? != 0,
                primary_key: row.get::<_, i64>(3)? as usize,
                generated: row.get::<_, i64>(4)? >= 2,
            })
        })?
        .collect::<rusqlite::Result<Vec<Column>>>()?;
    let (without_rowid, strict): (bool, bool) = conn.query_row(
        "SELECT wr, strict FROM pragma_table_list WHERE schema = 'main' AND name = ?1",
        [&name],
        |row| Ok((row.get::<_, i64>(0)? != 0, row.get::<_, i64>(1)? != 0)),
    )?;
    let mut statement = conn.prepare("SELECT \"table\" FROM pragma_foreign_key_list(?1)")?;
    let foreign_keys = statement
        .query_map([&name], |row| Ok(ForeignKey { parent: row.get(0)? }))?
        .collect::<rusqlite::Result<Vec<ForeignKey>>>()?;
    let autoincrement = sql.to_ascii_uppercase().contains("AUTOINCREMENT");
    Ok(Table { name, columns, without_rowid, strict, autoincrement, foreign_keys })
}

fn column_names(conn: &Connection, name: &str) -> rusqlite::Result<Vec<String>> {
    let mut statement = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let names = statement.query_map([name], |row| row.get(0))?.collect();
    names
}
