//! Loading SQL text (a dump: deeb's, `sqlite3 .dump`, rqlite's) through the
//! write path: statements split where SQLite itself would end them, grouped
//! into requests of bounded size, each request one transaction. Left out,
//! and counted: the dump's own transaction control (`BEGIN TRANSACTION`,
//! `COMMIT`), `PRAGMA` lines (`foreign_keys=OFF`: deeb enforces foreign
//! keys in every request) and `sqlite_sequence` writes (each replica keeps
//! the AUTOINCREMENT counters itself, from the rows the load inserts).
//! Never holds more than one request and one unfinished statement.

use super::classify::keywords;
use super::complete::split_statements;

/// The statements of SQL text, in requests of at most `statements_max`
/// statements and about `bytes_max` bytes.
#[derive(Debug)]
pub struct Loader {
    statements_max: usize,
    bytes_max: usize,
    /// Text after the last complete statement.
    pending: String,
    request: Vec<String>,
    request_bytes: usize,
    /// Statements left out (see the module documentation).
    pub skipped: u64,
}

impl Loader {
    pub fn new(statements_max: usize, bytes_max: usize) -> Loader {
        Loader {
            statements_max: statements_max.max(1),
            bytes_max,
            pending: String::new(),
            request: Vec::new(),
            request_bytes: 0,
            skipped: 0,
        }
    }

    /// Takes more text (whole lines, or any pieces split between
    /// characters); returns the requests it filled.
    ///
    /// # Errors
    /// One statement is larger than a request may be.
    pub fn feed(&mut self, text: &str) -> Result<Vec<Vec<String>>, String> {
        self.pending.push_str(text);
        if !text.contains(';') {
            return self.check_pending().map(|()| Vec::new());
        }
        let (statements, rest) = split_statements(&self.pending);
        self.pending = rest;
        let mut full = Vec::new();
        for statement in statements {
            if keywords(&statement, 1).is_empty() {
                // Only comments.
                continue;
            }
            if left_out(&statement) {
                self.skipped += 1;
                continue;
            }
            if statement.len() > self.bytes_max {
                return Err(too_large(&statement, self.bytes_max));
            }
            if self.request.len() == self.statements_max || self.request_bytes + statement.len() > self.bytes_max {
                full.push(self.take());
            }
            self.request_bytes += statement.len();
            self.request.push(statement);
        }
        self.check_pending().map(|()| full)
    }

    /// The end of the text: the last requests (a last statement without
    /// its `;` is still one).
    ///
    /// # Errors
    /// The text ends inside a statement.
    pub fn finish(&mut self) -> Result<Vec<Vec<String>>, String> {
        let rest = std::mem::take(&mut self.pending);
        let mut requests = Vec::new();
        if !rest.trim().is_empty() {
            requests = self.feed(&format!("{rest};"))?;
            if !self.pending.trim().is_empty() {
                let start: String = self.pending.trim().chars().take(60).collect();
                return Err(format!("the text ends inside a statement: {start}..."));
            }
        }
        if !self.request.is_empty() {
            requests.push(self.take());
        }
        Ok(requests)
    }

    fn take(&mut self) -> Vec<String> {
        self.request_bytes = 0;
        std::mem::take(&mut self.request)
    }

    fn check_pending(&self) -> Result<(), String> {
        match self.pending.len() > self.bytes_max {
            true => Err(too_large(&self.pending, self.bytes_max)),
            false => Ok(()),
        }
    }
}

fn too_large(statement: &str, bytes_max: usize) -> String {
    let start: String = statement.trim().chars().take(60).collect();
    format!("a statement is larger than a request may be ({bytes_max} bytes): {start}...")
}

/// True for the statements a load leaves out.
fn left_out(statement: &str) -> bool {
    let words = keywords(statement, 3);
    let word = |index: usize| words.get(index).map_or("", String::as_str);
    match word(0) {
        "BEGIN" | "COMMIT" | "END" | "PRAGMA" => true,
        "DELETE" => word(1) == "FROM" && word(2) == "SQLITE_SEQUENCE",
        "INSERT" => word(1) == "INTO" && word(2) == "SQLITE_SEQUENCE",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n\
        CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT);\n\
        INSERT INTO t VALUES(1,'a;b');\nINSERT INTO t VALUES(2,'c');\nINSERT INTO t VALUES(3,'d');\n\
        CREATE TRIGGER g AFTER INSERT ON t BEGIN\n  DELETE FROM t WHERE id < 0;\nEND;\n\
        DELETE FROM sqlite_sequence;\nINSERT INTO sqlite_sequence VALUES('t',9);\nCOMMIT;\n";

    fn load(text: &str, pieces: usize, statements_max: usize) -> (Vec<Vec<String>>, Loader) {
        let mut loader = Loader::new(statements_max, 1 << 20);
        let mut requests = Vec::new();
        let bytes: Vec<char> = text.chars().collect();
        for piece in bytes.chunks(pieces) {
            requests.extend(loader.feed(&piece.iter().collect::<String>()).expect("feeds"));
        }
        requests.extend(loader.finish().expect("finishes"));
        (requests, loader)
    }

    #[test]
    fn a_dump_loads_in_bounded_requests_without_its_transaction_control() {
        for pieces in [1, 7, DUMP.len()] {
            let (requests, loader) = load(DUMP, pieces, 2);
            let sizes: Vec<usize> = requests.iter().map(Vec::len).collect();
            assert_eq!(sizes, [2, 2, 1], "pieces of {pieces}: {requests:?}");
            assert_eq!(requests[0][1], "INSERT INTO t VALUES(1,'a;b')");
            assert!(requests[2][0].starts_with("CREATE TRIGGER g") && requests[2][0].ends_with("END"));
            assert_eq!((requests.iter().map(Vec::len).sum::<usize>(), loader.skipped), (5, 5));
        }
    }

    #[test]
    fn a_last_statement_without_its_semicolon_still_loads() {
        let expected = [vec!["CREATE TABLE a(x)".to_owned()], vec!["INSERT INTO a VALUES (1)".to_owned()]];
        let (requests, _) = load("CREATE TABLE a(x);\nINSERT INTO a VALUES (1)\n", 4, 1);
        assert_eq!(requests, expected);
        // A comment after the last statement is no statement.
        let (requests, _) = load("CREATE TABLE a(x);\nINSERT INTO a VALUES (1);\n-- the end\n", 4, 1);
        assert_eq!(requests, expected);
        let mut loader = Loader::new(10, 1 << 20);
        loader.feed("CREATE TRIGGER g AFTER INSERT ON a BEGIN DELETE FROM a;").expect("feeds");
        let error = loader.finish().expect_err("the trigger never ends");
        assert!(error.contains("ends inside a statement"), "{error}");
    }

    #[test]
    fn a_statement_larger_than_a_request_is_refused() {
        let mut loader = Loader::new(10, 100);
        let error = loader.feed(&format!("INSERT INTO a VALUES ('{}');", "x".repeat(200))).expect_err("too large");
        assert!(error.contains("larger than a request"), "{error}");
        let mut loader = Loader::new(10, 100);
        let error = loader.feed(&format!("INSERT INTO a VALUES ('{}'", "x".repeat(200))).expect_err("unbounded");
        assert!(error.contains("larger than a request"), "{error}");
    }
}
