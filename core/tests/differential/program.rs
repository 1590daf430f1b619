//! A SQL program: the requests a client sends, in order, and its text form
//! (the format of the files in `core/tests/sql_regressions/`, described in
//! that directory's README.md).

use std::fmt::Write as _;

/// One client request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// 1..=4 statements applied atomically.
    Write(Vec<String>),
    /// A read-only query whose rows are compared.
    Query(String),
}

/// A sequence of requests run on a fresh database.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Program {
    pub requests: Vec<Request>,
}

/// The line that separates requests.
pub const REQUEST_SEPARATOR: &str = "--;;";
/// The line that separates statements of one write request.
pub const STATEMENT_SEPARATOR: &str = ";;";
/// The first line of a block that is a query, not a write.
pub const QUERY_MARKER: &str = "--query";

/// Functions whose results differ between the reference and deeb (deeb's
/// leader has its own seeded `random()`; the clock moves between runs).
const NON_DETERMINISTIC: &[&str] =
    &["random(", "randomblob(", "'now'", "current_timestamp", "current_time", "current_date"];

impl Request {
    /// Every SQL text of the request.
    pub fn statements(&self) -> Vec<&str> {
        match self {
            Request::Write(statements) => statements.iter().map(String::as_str).collect(),
            Request::Query(sql) => vec![sql.as_str()],
        }
    }

    /// True if any statement calls a non-deterministic function, or creates
    /// a trigger that writes the table it is on: when such a trigger changes
    /// rows its statement is changing SQLite leaves the outcome undefined,
    /// and deeb keeps (and replicates) what SQLite's session recorded.
    pub fn is_non_deterministic(&self) -> bool {
        self.statements().iter().any(|sql| {
            let lower = sql.to_ascii_lowercase();
            NON_DETERMINISTIC.iter().any(|marker| lower.contains(marker)) || writes_own_table(&lower)
        })
    }
}

impl Program {
    /// Statements in all requests (a query counts as one).
    pub fn statement_count(&self) -> usize {
        self.requests.iter().map(|request| request.statements().len()).sum()
    }

    /// The text form: blocks separated by `--;;` lines; a write block's
    /// statements separated by `;;` lines; a query block starts `--query`.
    /// Lines starting with `#` before the first block are comments.
    pub fn to_text(&self, comments: &[String]) -> String {
        let mut text = String::new();
        for comment in comments {
            for line in comment.lines() {
                writeln!(text, "# {line}").expect("writing to a String");
            }
        }
        for (index, request) in self.requests.iter().enumerate() {
            if index > 0 {
                writeln!(text, "{REQUEST_SEPARATOR}").expect("writing to a String");
            }
            match request {
                Request::Query(sql) => writeln!(text, "{QUERY_MARKER}\n{sql}").expect("writing to a String"),
                Request::Write(statements) => {
                    writeln!(text, "{}", statements.join(&format!("\n{STATEMENT_SEPARATOR}\n")))
                        .expect("writing to a String")
                }
            }
        }
        text
    }

    /// Parses the text form written by [`Program::to_text`].
    pub fn parse(text: &str) -> Result<Program, String> {
        let body: Vec<&str> = text.lines().skip_while(|line| line.starts_with('#')).collect();
        let mut requests = Vec::new();
        for block in body.split(|line| line.trim_end() == REQUEST_SEPARATOR) {
            requests.push(parse_block(block)?);
        }
        if requests.is_empty() {
            return Err("no requests".into());
        }
        Ok(Program { requests })
    }
}

fn parse_block(block: &[&str]) -> Result<Request, String> {
    if block.first().is_some_and(|line| line.trim_end() == QUERY_MARKER) {
        let sql = block[1..].join("\n").trim().to_owned();
        return if sql.is_empty() { Err("empty query block".into()) } else { Ok(Request::Query(sql)) };
    }
    let statements: Vec<String> = block
        .split(|line| line.trim_end() == STATEMENT_SEPARATOR)
        .map(|lines| lines.join("\n").trim().to_owned())
        .collect();
    if statements.iter().any(String::is_empty) {
        return Err(format!("empty statement in block {block:?}"));
    }
    Ok(Request::Write(statements))
}

/// True for `create trigger ... on T ... begin ... <write to T> ... end`
/// (lower-cased SQL).
fn writes_own_table(lower: &str) -> bool {
    let words: Vec<&str> =
        lower.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).collect();
    if words.first() != Some(&"create") || !words.contains(&"trigger") {
        return false;
    }
    let Some(on) = words.iter().position(|w| *w == "on") else { return false };
    let Some(table) = words.get(on + 1) else { return false };
    let Some(begin) = words.iter().position(|w| *w == "begin") else { return false };
    let body = &words[begin..];
    (1..body.len()).any(|i| {
        body[i] == *table
            && (matches!(body[i - 1], "into" | "update")
                || (body[i - 1] == "from" && i >= 2 && body[i - 2] == "delete")
                || (i >= 3 && body[i - 3] == "update" && body[i - 2] == "or"))
    })
}
