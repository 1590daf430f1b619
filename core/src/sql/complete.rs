//! Where statements end in text a person types, as SQLite itself decides
//! (`sqlite3_complete`): a `;` inside a string, identifier, comment or a
//! trigger's `BEGIN ... END` body does not end one.

use std::ffi::CString;

/// True if `sql` ends with a complete statement (SQLite's own lexer).
pub fn is_complete(sql: &str) -> bool {
    // sqlite3_complete reads up to a NUL; one inside the text cannot be in
    // a statement anyway, so it is checked as a space.
    let Ok(text) = CString::new(sql.replace('\0', " ")) else { return false };
    // SAFETY: a valid NUL-terminated string for the duration of the call.
    unsafe { rusqlite::ffi::sqlite3_complete(text.as_ptr()) != 0 }
}

/// Splits `text` into the complete statements it begins with (trimmed,
/// without their final `;`, empty ones skipped) and the unfinished rest.
pub fn split_statements(text: &str) -> (Vec<String>, String) {
    let mut statements = Vec::new();
    let mut start = 0;
    for (at, _) in text.match_indices(';') {
        let candidate = &text[start..=at];
        if is_complete(candidate) {
            let statement = candidate[..candidate.len() - 1].trim();
            if !statement.is_empty() {
                statements.push(statement.to_owned());
            }
            start = at + 1;
        }
    }
    (statements, text[start..].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semicolons_in_quotes_comments_and_brackets_do_not_end_statements() {
        let (statements, rest) = split_statements("INSERT INTO t VALUES ('a;b'); SELECT \"x;y\" FROM t; SELECT");
        assert_eq!(statements, ["INSERT INTO t VALUES ('a;b')", "SELECT \"x;y\" FROM t"]);
        assert_eq!(rest.trim(), "SELECT");
        let (statements, rest) = split_statements("SELECT 1 -- a;b\n; SELECT [c;d] /* e;f */ ;");
        assert_eq!(statements, ["SELECT 1 -- a;b", "SELECT [c;d] /* e;f */"]);
        assert!(rest.trim().is_empty());
        let (statements, _) = split_statements("SELECT 'it''s;here';");
        assert_eq!(statements, ["SELECT 'it''s;here'"]);
    }

    /// The shell once split a trigger at its first `;` and ran the body's
    /// `DELETE FROM scratch` on its own.
    #[test]
    fn a_trigger_body_stays_whole() {
        let trigger =
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN\n  DELETE FROM scratch;\n  INSERT INTO log VALUES (1);\nEND;";
        let (statements, rest) = split_statements(&trigger[..trigger.find("scratch;").unwrap() + 8]);
        assert!(statements.is_empty(), "{statements:?}");
        assert!(!is_complete(&rest));
        let (statements, rest) = split_statements(&format!("{trigger} SELECT 1;"));
        assert_eq!(statements, [&trigger[..trigger.len() - 1], "SELECT 1"]);
        assert!(rest.is_empty());
    }

    #[test]
    fn empty_statements_are_skipped() {
        let (statements, rest) = split_statements(";; ;\n");
        assert!(statements.is_empty());
        assert_eq!(rest, "\n");
    }
}
