//! Statement screening: keyword checks done before preparing, and the
//! authorizer policies for client statements.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::c_int;

use rusqlite::{ffi, Connection};

/// Prefix of the internal tables client SQL may not write.
pub(crate) const INTERNAL_PREFIX: &str = "_deeb_";

/// The SQL with leading whitespace, comments and empty statements (`;`)
/// removed.
fn skip_space_and_comments(mut sql: &str) -> &str {
    loop {
        let trimmed = sql.trim_start().trim_start_matches(';').trim_start();
        if let Some(rest) = trimmed.strip_prefix("--") {
            sql = rest.find('\n').map_or("", |i| &rest[i + 1..]);
        } else if let Some(rest) = trimmed.strip_prefix("/*") {
            sql = rest.find("*/").map_or("", |i| &rest[i + 2..]);
        } else {
            return trimmed;
        }
    }
}

/// The first `n` keywords (identifier-like words) of the SQL, upper-cased.
pub(crate) fn keywords(sql: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = sql;
    while out.len() < n {
        rest = skip_space_and_comments(rest).trim_start_matches('.');
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        out.push(rest[..end].to_ascii_uppercase());
        rest = &rest[end..];
    }
    out
}

/// Statements refused by their first keyword on both paths.
const CONTROL: &[&str] = &["BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE", "ATTACH", "DETACH", "VACUUM"];

/// Why a statement is refused on the write path by its keywords, if it is.
pub(crate) fn refuse_write(sql: &str) -> Option<String> {
    let words = keywords(sql, 3);
    let first = words.first().map(String::as_str).unwrap_or("");
    if CONTROL.contains(&first) {
        return Some(format!(
            "{first} is not allowed: each request already runs as one transaction; \
             ATTACH, DETACH and VACUUM are not supported"
        ));
    }
    match first {
        "PRAGMA" => Some("PRAGMA is not allowed in execute requests".to_string()),
        "ANALYZE" => Some("ANALYZE is not allowed in execute requests".to_string()),
        "CREATE" if words.get(1).is_some_and(|w| w == "TEMP" || w == "TEMPORARY") => Some(TEMP_MESSAGE.to_string()),
        "CREATE" if is_create_table_as(sql) => Some(CTAS_MESSAGE.to_string()),
        "DELETE" | "WITH" if sql.to_ascii_lowercase().contains("sqlite_sequence") => Some(SEQUENCE_MESSAGE.to_string()),
        _ => None,
    }
}

/// The refusal message for temporary objects (they would exist on one node
/// only, outside replication).
const TEMP_MESSAGE: &str = "temporary objects (CREATE TEMP, the temp schema) are not allowed: they are not replicated";

/// The refusal message for writes to `sqlite_sequence`.
const SEQUENCE_MESSAGE: &str = "sqlite_sequence may not be written directly";

/// The refusal message for `CREATE TABLE ... AS SELECT`.
pub(crate) const CTAS_MESSAGE: &str = "CREATE TABLE ... AS SELECT is not supported (schema \
     changes must not write rows): CREATE the table, then INSERT INTO ... SELECT";

/// True for `CREATE TABLE [IF NOT EXISTS] name AS ...`: an `AS` keyword
/// before any opening parenthesis.
fn is_create_table_as(sql: &str) -> bool {
    let words = keywords(sql, 2);
    if words.get(1).map(String::as_str) != Some("TABLE") {
        return false;
    }
    let head = sql.split('(').next().unwrap_or("");
    head.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).any(|w| w.eq_ignore_ascii_case("AS"))
}

/// Why a schema statement that also changed rows is refused: DDL is
/// replicated as text and its row changes could not travel with it.
///
/// `DROP TABLE` of a table others reference first deletes its rows (and
/// runs their foreign-key actions); SQLite's session cannot describe rows
/// of a table that no longer exists, so the client deletes them first.
pub(crate) fn ddl_changes_refusal(sql: &str) -> String {
    let message = match keywords(sql, 2).iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["CREATE", "TABLE"] => CTAS_MESSAGE,
        ["DROP", "TABLE"] => DROP_REFERENCED_MESSAGE,
        _ => DDL_CHANGES_MESSAGE,
    };
    message.to_string()
}

/// The refusal message for rowid tables whose key of several columns may
/// hold NULL.
pub(crate) const NULLABLE_KEY_MESSAGE: &str = "its PRIMARY KEY columns may hold NULL (a SQLite quirk of \
     rowid tables), and rows with a NULL key cannot be replicated: declare them NOT NULL, or make the \
     table STRICT or WITHOUT ROWID";

/// The refusal message for a NULL written into a one-column key.
pub(crate) const NULL_KEY_MESSAGE: &str = "NULL in a PRIMARY KEY column (a SQLite quirk of rowid tables) \
     is not supported: rows with a NULL key cannot be replicated";

/// The refusal message for primary keys compared with a collation.
pub(crate) const COLLATED_KEY_MESSAGE: &str = "a PRIMARY KEY column with a collation other than BINARY \
     is not supported: row changes are keyed by the key's bytes, so 'B' and 'b' would be two rows to \
     a replica but one to SQLite (a UNIQUE constraint with the collation works)";

/// The refusal message for dropping a table whose rows others reference.
const DROP_REFERENCED_MESSAGE: &str = "DROP TABLE would also delete rows that foreign keys reference \
     (and run their actions) in the same statement, which is not supported: DELETE FROM the table first";

/// The refusal message for other schema changes that write rows.
const DDL_CHANGES_MESSAGE: &str = "this schema change also changes rows, which is not supported: \
     change the rows in a statement of their own";

/// Pragmas a query may run (all read-only).
const READ_PRAGMAS: &[&str] =
    &["TABLE_INFO", "TABLE_XINFO", "TABLE_LIST", "INDEX_LIST", "INDEX_INFO", "INDEX_XINFO", "FOREIGN_KEY_LIST"];

/// Why a statement is refused on the read path by its keywords, if it is.
pub(crate) fn refuse_read(sql: &str) -> Option<String> {
    let words = keywords(sql, 3);
    let first = words.first().map(String::as_str).unwrap_or("");
    if CONTROL.contains(&first) {
        return Some(format!("{first} is not allowed in a query"));
    }
    if first == "PRAGMA" {
        // `PRAGMA main.table_info(t)` gives [PRAGMA, MAIN, TABLE_INFO];
        // the temp schema is always empty here (temporary objects are
        // refused), and SQLAlchemy looks there.
        let name = match words.get(1).map(String::as_str) {
            Some("MAIN" | "TEMP") => words.get(2),
            _ => words.get(1),
        };
        let allowed = name.is_some_and(|n| READ_PRAGMAS.contains(&n.as_str()) || n == READ_UNCOMMITTED);
        if !allowed || sql.contains('=') {
            return Some(read_pragmas_message());
        }
    }
    None
}

fn is_internal(name: Option<&str>) -> bool {
    name.is_some_and(|n| {
        n.len() >= INTERNAL_PREFIX.len() && n[..INTERNAL_PREFIX.len()].eq_ignore_ascii_case(INTERNAL_PREFIX)
    })
}

/// Authorizer policy for client statements on the write path.
///
/// Direct writes to `sqlite_sequence` are refused: every replica maintains
/// it itself. DELETE is let through outside triggers because DROP TABLE of
/// an AUTOINCREMENT table issues one internally; a client's own DELETE on it
/// is refused by [`refuse_write`].
pub(crate) fn write_policy(
    action: c_int,
    a: Option<&str>,
    b: Option<&str>,
    db: Option<&str>,
    trigger: Option<&str>,
) -> Option<String> {
    // `temp.x` is this connection's private schema: never replicated. Every
    // new temp object is an INSERT into the temp schema table (a temp
    // trigger on a main table is authorized as a main one otherwise);
    // ALTER TABLE only UPDATEs that table, which is let through.
    let in_temp = db.is_some_and(|d| d.eq_ignore_ascii_case("temp"));
    let creates = matches!(
        action,
        ffi::SQLITE_CREATE_TABLE | ffi::SQLITE_CREATE_INDEX | ffi::SQLITE_CREATE_TRIGGER | ffi::SQLITE_CREATE_VIEW
    );
    let writes_user_table = matches!(action, ffi::SQLITE_UPDATE | ffi::SQLITE_DELETE)
        && !a.is_some_and(|t| t.to_ascii_lowercase().starts_with("sqlite_"));
    if in_temp && (creates || action == ffi::SQLITE_INSERT || writes_user_table) {
        return Some(TEMP_MESSAGE.into());
    }
    match action {
        ffi::SQLITE_CREATE_TEMP_INDEX
        | ffi::SQLITE_CREATE_TEMP_TABLE
        | ffi::SQLITE_CREATE_TEMP_TRIGGER
        | ffi::SQLITE_CREATE_TEMP_VIEW
        | ffi::SQLITE_DROP_TEMP_INDEX
        | ffi::SQLITE_DROP_TEMP_TABLE
        | ffi::SQLITE_DROP_TEMP_TRIGGER
        | ffi::SQLITE_DROP_TEMP_VIEW => return Some(TEMP_MESSAGE.into()),
        // SQLite's session code reads table_xinfo while the statement runs,
        // and ALTER TABLE checks a table it changed with quick_check; client
        // PRAGMA statements are refused by keyword before this.
        ffi::SQLITE_PRAGMA
            if a.is_some_and(|p| {
                let p = p.to_ascii_uppercase();
                READ_PRAGMAS.contains(&p.as_str()) || p == "QUICK_CHECK"
            }) => {}
        ffi::SQLITE_PRAGMA => return Some("PRAGMA is not allowed in execute requests".into()),
        ffi::SQLITE_TRANSACTION | ffi::SQLITE_SAVEPOINT => {
            return Some("transaction control is not allowed: each request is one transaction".into())
        }
        ffi::SQLITE_ATTACH | ffi::SQLITE_DETACH => return Some("ATTACH and DETACH are not allowed".into()),
        ffi::SQLITE_ANALYZE => return Some("ANALYZE is not allowed".into()),
        ffi::SQLITE_CREATE_VTABLE | ffi::SQLITE_DROP_VTABLE => return Some("virtual tables are not supported".into()),
        _ => {}
    }
    if is_internal(a) || is_internal(b) {
        return Some(format!("tables named {INTERNAL_PREFIX}* are internal to deeb"));
    }
    let writes = match action {
        ffi::SQLITE_INSERT | ffi::SQLITE_UPDATE => true,
        ffi::SQLITE_DELETE => trigger.is_some(),
        _ => false,
    };
    if writes && a.is_some_and(|t| t.eq_ignore_ascii_case("sqlite_sequence")) {
        return Some(SEQUENCE_MESSAGE.into());
    }
    None
}

/// Authorizer policy for queries: no attaching, no transaction control,
/// only the read-only pragmas (whatever the statement's first keyword), and
/// not the rowid of a table in `hidden_rowid` (see [`hidden_rowid_tables`]).
pub(crate) fn read_policy(
    action: c_int,
    a: Option<&str>,
    b: Option<&str>,
    hidden_rowid: &BTreeSet<String>,
) -> Option<String> {
    match action {
        ffi::SQLITE_ATTACH | ffi::SQLITE_DETACH => Some("ATTACH and DETACH are not allowed in a query".into()),
        ffi::SQLITE_TRANSACTION | ffi::SQLITE_SAVEPOINT => Some("transaction control is not allowed in a query".into()),
        ffi::SQLITE_PRAGMA if a.is_some_and(|p| READ_PRAGMAS.contains(&p.to_ascii_uppercase().as_str())) => None,
        ffi::SQLITE_PRAGMA
            if b.is_none() && a.is_some_and(|p| VALUE_PRAGMAS.contains(&p.to_ascii_uppercase().as_str())) =>
        {
            None
        }
        ffi::SQLITE_PRAGMA => Some(read_pragmas_message()),
        _ => hidden_rowid_read(action, a, b, hidden_rowid),
    }
}

/// Refuses reading the rowid of a table in `hidden_rowid`, on both paths:
/// a query would answer differently per node, and a write would change
/// rows chosen by whichever node leads.
pub(crate) fn hidden_rowid_read(
    action: c_int,
    a: Option<&str>,
    b: Option<&str>,
    hidden_rowid: &BTreeSet<String>,
) -> Option<String> {
    let reads_hidden = action == ffi::SQLITE_READ
        && b == Some("ROWID")
        && a.is_some_and(|table| hidden_rowid.contains(&table.to_ascii_lowercase()));
    reads_hidden.then(|| HIDDEN_ROWID_MESSAGE.into())
}

/// What the write and read paths need to know of rowid tables keyed by
/// something other than INTEGER PRIMARY KEY (lower-cased names).
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyedRowidTables {
    /// Their rowid is not replicated.
    pub(crate) hidden_rowid: BTreeSet<String>,
    /// Table -> its one key column, which may hold NULL (not STRICT, not
    /// declared NOT NULL): rows with a NULL key are not replicated.
    pub(crate) nullable_key: BTreeMap<String, String>,
    /// Tables (of any kind) with triggers.
    pub(crate) with_triggers: BTreeSet<String>,
}

/// [`KeyedRowidTables`], cached per schema version.
#[derive(Debug, Default)]
pub(crate) struct KeyedRowidCache {
    cached: RefCell<Option<(i64, KeyedRowidTables)>>,
}

impl KeyedRowidCache {
    /// The keyed rowid tables of `conn`'s schema.
    pub(crate) fn get(&self, conn: &Connection) -> rusqlite::Result<KeyedRowidTables> {
        let version: i64 = conn.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
        let mut cached = self.cached.borrow_mut();
        match cached.as_ref() {
            Some((seen, tables)) if *seen == version => Ok(tables.clone()),
            _ => {
                let tables = KeyedRowidTables {
                    hidden_rowid: hidden_rowid_tables(conn)?,
                    nullable_key: nullable_keys(conn)?,
                    with_triggers: tables_with_triggers(conn)?,
                };
                *cached = Some((version, tables.clone()));
                Ok(tables)
            }
        }
    }
}

/// Tables that have triggers (lower-cased).
fn tables_with_triggers(conn: &Connection) -> rusqlite::Result<BTreeSet<String>> {
    let mut stmt = conn.prepare("SELECT DISTINCT lower(tbl_name) FROM sqlite_master WHERE type = 'trigger'")?;
    let names = stmt.query_map([], |r| r.get(0))?.collect();
    names
}

/// Keyed rowid tables whose single key column may hold NULL.
fn nullable_keys(conn: &Connection) -> rusqlite::Result<BTreeMap<String, String>> {
    let sql = "SELECT lower(t.name), c.name FROM pragma_table_list AS t, pragma_table_info(t.name) AS c \
               WHERE t.schema = 'main' AND t.type = 'table' AND NOT t.wr AND NOT t.strict \
               AND c.pk = 1 AND NOT c.\"notnull\" \
               AND (SELECT count(*) FROM pragma_table_info(t.name) WHERE pk > 0) = 1 \
               AND EXISTS (SELECT 1 FROM pragma_index_list(t.name) AS i WHERE i.origin = 'pk')";
    let mut stmt = conn.prepare(sql)?;
    let keys = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect();
    keys
}

/// Pragmas a query may read (never set): database header values that client
/// SQL cannot change, so they are equal on every replica.
const VALUE_PRAGMAS: &[&str] = &["USER_VERSION", "APPLICATION_ID", READ_UNCOMMITTED];

/// A query may also run `PRAGMA read_uncommitted` itself (never set it):
/// it reads a connection flag, 0 on every replica, and SQLAlchemy's SQLite
/// dialect asks for it on connecting.
const READ_UNCOMMITTED: &str = "READ_UNCOMMITTED";

/// The refusal message for reading a rowid that is not replicated.
const HIDDEN_ROWID_MESSAGE: &str = "the rowid of a table with a PRIMARY KEY other than INTEGER PRIMARY KEY \
     is not replicated (each replica numbers its rows itself): select the PRIMARY KEY instead";

/// Rowid tables whose rowid is not the primary key (lower-cased names):
/// row changes carry their key, so each replica picks its own rowids.
/// (Tables without a declared key are replicated by rowid.)
pub(crate) fn hidden_rowid_tables(conn: &Connection) -> rusqlite::Result<BTreeSet<String>> {
    let sql = "SELECT lower(t.name) FROM pragma_table_list AS t WHERE t.schema = 'main' AND t.type = 'table' \
               AND NOT t.wr AND EXISTS (SELECT 1 FROM pragma_index_list(t.name) AS i WHERE i.origin = 'pk')";
    let mut stmt = conn.prepare(sql)?;
    let names = stmt.query_map([], |r| r.get(0))?.collect();
    names
}

fn read_pragmas_message() -> String {
    format!("only these pragmas may be queried: {}", READ_PRAGMAS.join(", ")).to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_skip_comments() {
        assert_eq!(keywords(" -- hi\n /* x */ begin  transaction", 2), vec!["BEGIN", "TRANSACTION"]);
        assert_eq!(keywords("", 2), Vec::<String>::new());
    }

    #[test]
    fn ctas_detected() {
        assert!(is_create_table_as("CREATE TABLE t AS SELECT 1"));
        assert!(is_create_table_as("create table if not exists t as select 1"));
        assert!(!is_create_table_as("CREATE TABLE t(a AS (1))"));
        assert!(!is_create_table_as("CREATE INDEX i ON t(a)"));
    }

    #[test]
    fn read_pragmas() {
        assert!(refuse_read("PRAGMA table_info(t)").is_none());
        assert!(refuse_read("pragma main.table_list").is_none());
        assert!(refuse_read("PRAGMA read_uncommitted").is_none());
        assert!(refuse_read("PRAGMA temp.table_info(\"t\")").is_none());
        assert!(refuse_read("PRAGMA read_uncommitted = 1").is_some());
        assert!(refuse_read("PRAGMA journal_mode=DELETE").is_some());
        assert!(refuse_read("PRAGMA user_version").is_some());
        assert!(refuse_read("BEGIN").is_some());
    }
}
