//! Splitting shell input into complete statements at `;` outside quotes,
//! identifiers and comments.

/// Accumulates input lines and hands out complete statements.
#[derive(Debug, Default)]
pub struct StatementSplitter {
    buffer: String,
}

impl StatementSplitter {
    /// Adds a line; returns every statement it completes (without the `;`,
    /// trimmed, empty ones skipped).
    pub fn push_line(&mut self, line: &str) -> Vec<String> {
        self.buffer.push_str(line);
        self.buffer.push('\n');
        let (statements, rest) = split_complete(&self.buffer);
        self.buffer = rest;
        statements
    }

    /// True when no partial statement is waiting.
    pub fn is_empty(&self) -> bool {
        self.buffer.trim().is_empty()
    }

    /// Takes what is left (an unterminated statement at end of input).
    pub fn take_rest(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buffer);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_owned())
    }
}

/// Lexer state between characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Code,
    /// Inside a quote that ends with this character (`'`, `"`, `` ` ``, `]`).
    Quoted(char),
    LineComment,
    BlockComment,
}

/// Splits `text` into complete statements and the unfinished remainder.
pub fn split_complete(text: &str) -> (Vec<String>, String) {
    let mut statements = Vec::new();
    let mut state = State::Code;
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let next = chars.peek().map(|&(_, next)| next);
        state = match (state, c) {
            (State::Code, ';') => {
                push_trimmed(&mut statements, &text[start..at]);
                start = at + 1;
                State::Code
            }
            (State::Code, '\'' | '"' | '`') => State::Quoted(c),
            (State::Code, '[') => State::Quoted(']'),
            (State::Code, '-') if next == Some('-') => State::LineComment,
            (State::Code, '/') if next == Some('*') => {
                chars.next();
                State::BlockComment
            }
            (State::Quoted(end), c) if c == end => State::Code,
            (State::LineComment, '\n') => State::Code,
            (State::BlockComment, '*') if next == Some('/') => {
                chars.next();
                State::Code
            }
            (state, _) => state,
        };
    }
    (statements, text[start..].to_owned())
}

fn push_trimmed(statements: &mut Vec<String>, text: &str) {
    let text = text.trim();
    if !text.is_empty() {
        statements.push(text.to_owned());
    }
}

/// True for statements that go to `Query` (reads) rather than `Execute`.
pub fn is_query(sql: &str) -> bool {
    let first = first_keyword(sql).to_ascii_uppercase();
    matches!(first.as_str(), "SELECT" | "WITH" | "PRAGMA" | "EXPLAIN" | "VALUES")
}

/// The first word of a statement, skipping leading comments.
fn first_keyword(sql: &str) -> &str {
    let mut rest = sql.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, tail)| tail).trim_start();
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, tail)| tail).trim_start();
        } else {
            break;
        }
    }
    let end = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
    &rest[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_semicolons_outside_quotes() {
        let (statements, rest) = split_complete("INSERT INTO t VALUES ('a;b'); SELECT \"x;y\" FROM t; SELECT");
        assert_eq!(statements, vec!["INSERT INTO t VALUES ('a;b')", "SELECT \"x;y\" FROM t"]);
        assert_eq!(rest.trim(), "SELECT");
    }

    #[test]
    fn comments_and_brackets_hide_semicolons() {
        let (statements, rest) = split_complete("SELECT 1 -- a;b\n; SELECT [c;d] /* e;f */ ;");
        assert_eq!(statements, vec!["SELECT 1 -- a;b", "SELECT [c;d] /* e;f */"]);
        assert!(rest.trim().is_empty());
    }

    #[test]
    fn escaped_quotes_stay_inside() {
        let (statements, _) = split_complete("SELECT 'it''s;here';");
        assert_eq!(statements, vec!["SELECT 'it''s;here'"]);
    }

    #[test]
    fn multi_line_statements_accumulate() {
        let mut splitter = StatementSplitter::default();
        assert!(splitter.push_line("CREATE TABLE t (").is_empty());
        assert!(!splitter.is_empty());
        assert_eq!(splitter.push_line("x INTEGER);"), vec!["CREATE TABLE t (\nx INTEGER)"]);
        assert!(splitter.is_empty());
        splitter.push_line("SELECT 1");
        assert_eq!(splitter.take_rest(), Some("SELECT 1".to_owned()));
    }

    #[test]
    fn classifies_reads() {
        assert!(is_query("select * from t"));
        assert!(is_query("  -- c\n WITH x AS (SELECT 1) SELECT * FROM x"));
        assert!(is_query("PRAGMA table_info(t)"));
        assert!(is_query("VALUES (1)"));
        assert!(!is_query("INSERT INTO t VALUES (1)"));
        assert!(!is_query("BEGIN"));
    }
}
