//! A dump of a database's user-visible state: the schema (without deeb's
//! `_deeb_*` tables), the header fields a client can set, and every row of
//! every table (`sqlite_sequence` included) in a canonical order.

use super::answer::{sorted, Rows};

/// Named sections, compared in order.
pub type Dump = Vec<(String, Rows)>;

/// Dumps through `query` (a reference connection or a node's reader).
pub fn dump(query: &mut dyn FnMut(&str) -> Rows) -> Dump {
    let schema_sql = "SELECT type, name, tbl_name, sql FROM sqlite_master \
                      WHERE name NOT LIKE '\\_deeb\\_%' ESCAPE '\\' ORDER BY type, name";
    let mut sections = vec![("schema".to_owned(), query(schema_sql))];
    sections.push(("user_version".to_owned(), query("SELECT * FROM pragma_user_version")));
    let tables_sql = "SELECT name FROM sqlite_master WHERE type = 'table' \
                      AND name NOT LIKE '\\_deeb\\_%' ESCAPE '\\' ORDER BY name";
    let Ok(tables) = query(tables_sql) else {
        return sections;
    };
    for row in tables.iter().take(TABLES_MAX) {
        let super::answer::Cell::Text(name) = &row[0] else { continue };
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        // Only tables without a declared key are replicated by rowid; the
        // others (WITHOUT ROWID, or a key other than INTEGER PRIMARY KEY)
        // sort by content, and deeb refuses to read their rowid.
        let keyed = query(&format!("SELECT count(*) FROM pragma_index_list({}) WHERE origin = 'pk'", sql_text(name)));
        let rows = match keyed.as_deref().map(|rows| rows.first().map(|row| row[0].clone())) {
            Ok(Some(super::answer::Cell::Integer(0))) => query(&format!("SELECT rowid, * FROM {quoted}")),
            _ => query(&format!("SELECT * FROM {quoted}")),
        };
        sections.push((format!("table {name}"), sorted(&rows)));
    }
    sections
}

/// The first section where two dumps differ: (name, expected, actual).
pub fn first_difference<'a>(
    expected: &'a Dump,
    actual: &'a Dump,
) -> Option<(String, Option<&'a Rows>, Option<&'a Rows>)> {
    let count = expected.len().max(actual.len());
    (0..count).find_map(|i| {
        let left = expected.get(i);
        let right = actual.get(i);
        if left == right {
            return None;
        }
        let name = left.or(right).map(|(name, _)| name.clone()).unwrap_or_default();
        Some((name, left.map(|(_, rows)| rows), right.map(|(_, rows)| rows)))
    })
}

/// A SQL string literal.
fn sql_text(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A bound on the tables dumped.
const TABLES_MAX: usize = 1_000;

/// How two versions of a dump section differ, for a report: whether only
/// the rowids (the first column of a rowid table's rows) differ.
pub fn describe_difference(section: &str, left: Option<&Rows>, right: Option<&Rows>) -> &'static str {
    let without_rowids = |rows: Option<&Rows>| {
        rows.and_then(|rows| rows.as_ref().ok()).map(|rows| {
            let mut rest: Vec<Vec<super::answer::Cell>> =
                rows.iter().map(|row| row.iter().skip(1).cloned().collect()).collect();
            rest.sort();
            rest
        })
    };
    let table = section.starts_with("table ") && section != "table sqlite_sequence";
    match (without_rowids(left), without_rowids(right)) {
        (Some(a), Some(b)) if table && a == b => "only rowids differ",
        _ => "rows differ",
    }
}
