//! `deeb shell`: an SQL shell. On a terminal it edits lines and keeps a
//! history (rustyline), Ctrl-C cancels the input being typed or the
//! statement running, Ctrl-D leaves. With piped input it runs statement
//! after statement and stops at the first failure (exit code 1) unless
//! `--keep-going`. Statements end where SQLite's own `sqlite3_complete`
//! says they do, so a trigger's `BEGIN ... END;` body stays whole.

use std::fs::File;
use std::io::{self, BufRead, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use deeb_core::sql::complete::split_statements;
use deeb_proto::ErrorCode;
use rustyline::error::ReadlineError;

use super::args::Level;
use super::commands::{self, Client};
use super::output::{Format, Printer};

/// The shell's state between commands.
pub struct Shell {
    client: Client,
    level: Level,
    interactive: bool,
    keep_going: bool,
    format: Format,
    headers: bool,
    null: String,
    timer: bool,
    /// `.output FILE`: where results go instead of stdout.
    output: Option<BufWriter<File>>,
    /// Some statement or command failed.
    failed: bool,
}

/// What the loop does after a line.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    /// `.quit`, or a failure in batch mode.
    Stop,
}

/// One line of input, or why there is none.
enum Input {
    Line(String),
    /// Ctrl-C while typing: drop the statement being typed.
    Interrupted,
    End,
}

/// Where lines come from: the line editor on a terminal, else stdin.
enum Lines {
    Editor(Box<rustyline::DefaultEditor>, Option<PathBuf>),
    Piped(io::StdinLock<'static>),
}

impl Lines {
    fn open(interactive: bool) -> Lines {
        if interactive {
            if let Ok(mut editor) = rustyline::DefaultEditor::new() {
                let history = history_path();
                if let Some(path) = &history {
                    // A missing history file is the first session.
                    let _ = editor.load_history(path);
                }
                return Lines::Editor(Box::new(editor), history);
            }
        }
        Lines::Piped(io::stdin().lock())
    }

    fn read(&mut self, prompt: &str) -> io::Result<Input> {
        match self {
            Lines::Editor(editor, _) => match editor.readline(prompt) {
                Ok(line) => Ok(Input::Line(line)),
                Err(ReadlineError::Interrupted) => Ok(Input::Interrupted),
                Err(ReadlineError::Eof) => Ok(Input::End),
                Err(ReadlineError::Io(error)) => Err(error),
                Err(error) => Err(io::Error::other(error.to_string())),
            },
            Lines::Piped(stdin) => {
                let mut line = String::new();
                match stdin.read_line(&mut line)? {
                    0 => Ok(Input::End),
                    _ => Ok(Input::Line(line.trim_end_matches(['\n', '\r']).to_owned())),
                }
            }
        }
    }

    /// Remembers a whole statement or command (one history entry, however
    /// many lines it was typed on) and saves the history file.
    fn remember(&mut self, entry: &str) {
        if let Lines::Editor(editor, Some(path)) = self {
            let _ = editor.add_history_entry(entry);
            let _ = editor.save_history(path);
        }
    }
}

/// `$DEEB_HISTORY`, else `~/.deeb_history`.
fn history_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("DEEB_HISTORY") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".deeb_history"))
}

/// Bound on a file `.read` runs.
const READ_FILE_BYTES_MAX: u64 = 64 << 20;

impl Shell {
    /// A shell on a connected client.
    pub fn new(client: Client, format: Format, keep_going: bool) -> Self {
        let interactive = io::stdin().is_terminal();
        Shell {
            client,
            level: Level::Linearizable,
            interactive,
            keep_going,
            format,
            headers: true,
            null: "NULL".to_owned(),
            timer: false,
            output: None,
            failed: false,
        }
    }

    /// Reads input until EOF or `.quit`. Returns false if, with piped
    /// input, a statement or command failed (the process then exits 1).
    ///
    /// # Errors
    /// Reading the input failed.
    pub async fn run(&mut self) -> io::Result<bool> {
        let mut lines = Lines::open(self.interactive);
        if self.interactive {
            println!("deeb shell: statements end with ';'. .help for commands, Ctrl-D to leave.");
        }
        let mut pending = String::new();
        loop {
            let prompt = if pending.trim().is_empty() { "deeb> " } else { "   ...> " };
            let line = match lines.read(prompt)? {
                Input::Line(line) => line,
                Input::Interrupted => {
                    pending.clear();
                    continue;
                }
                Input::End => break,
            };
            if pending.trim().is_empty() && line.trim_start().starts_with('.') {
                lines.remember(line.trim());
                pending.clear();
                if self.dot_command(line.trim()).await == Flow::Stop {
                    return self.finish();
                }
                continue;
            }
            pending.push_str(&line);
            pending.push('\n');
            let (statements, rest) = split_statements(&pending);
            if !statements.is_empty() {
                let typed = pending[..pending.len() - rest.len()].trim().to_owned();
                lines.remember(&typed);
            }
            pending = rest;
            if self.run_statements(&statements).await == Flow::Stop {
                return self.finish();
            }
        }
        // An unterminated statement at the end of piped input still runs.
        let rest = pending.trim().to_owned();
        if !rest.is_empty() {
            self.run_statements(&[rest]).await;
        }
        self.finish()
    }

    fn finish(&mut self) -> io::Result<bool> {
        if let Some(file) = &mut self.output {
            file.flush()?;
        }
        io::stdout().flush()?;
        // A person at a terminal saw each error; the exit code reports
        // failures to scripts.
        Ok(self.interactive || !self.failed)
    }

    async fn run_statements(&mut self, statements: &[String]) -> Flow {
        for sql in statements {
            if !self.run_statement(sql).await && !self.interactive && !self.keep_going {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Runs one statement and prints its result; false if it failed. On a
    /// terminal, Ctrl-C stops it (the server stops the statement too).
    async fn run_statement(&mut self, sql: &str) -> bool {
        if first_keyword(sql).is_empty() {
            return true; // only comments
        }
        let started = Instant::now();
        let ran = if self.interactive {
            tokio::select! {
                ran = self.send(sql) => ran,
                _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
            }
        } else {
            self.send(sql).await
        };
        if self.timer {
            println!("Run Time: real {:.3}", started.elapsed().as_secs_f64());
        }
        match ran {
            Ok(()) => true,
            Err(message) => {
                eprintln!("error: {message}");
                self.failed = true;
                false
            }
        }
    }

    /// Sends `sql` as a query or a write and prints what comes back.
    async fn send(&mut self, sql: &str) -> Result<(), String> {
        if is_query(sql) {
            match self.query(sql).await {
                // `WITH ... INSERT` starts like a query: the read path
                // refuses it before running anything, so it is sent again
                // as a write.
                Err(status) if is_write_refused_as_query(&status) => {}
                other => return other.map_err(|error| commands::describe_error(&error)),
            }
        }
        let response = commands::execute(&self.client, sql).await.map_err(|error| commands::describe_error(&error))?;
        let text = commands::format_execute_as(&response, self.format);
        self.out().write_all(text.as_bytes()).map_err(|error| format!("writing the output: {error}"))
    }

    /// Runs a query, printing rows as they arrive.
    async fn query(&mut self, sql: &str) -> Result<(), commands::Error> {
        let Shell { client, level, format, headers, null, output, .. } = self;
        let out: Box<dyn Write + '_> = match output {
            Some(file) => Box::new(file),
            None => Box::new(io::stdout().lock()),
        };
        let mut out = Some(out);
        let mut printer = None;
        let mut failed = None;
        commands::query_chunks(client, sql, *level, None, None, |chunk| {
            let printer = printer.get_or_insert_with(|| {
                let out = out.take().expect("taken once");
                Printer::new(out, *format, *headers, null, commands::column_names(&chunk))
            });
            failed = chunk.rows.iter().try_for_each(|row| printer.row(row)).err();
            failed.is_none()
        })
        .await?;
        let written = match (failed, printer) {
            (Some(error), _) => Err(error),
            (None, Some(printer)) => printer.finish().map(drop),
            (None, None) => Ok(()),
        };
        written.map_err(|error| commands::Error {
            error_code: None,
            grpc_code: tonic::Code::Internal,
            message: format!("writing the output: {error}"),
            sqlite_code: 0,
            statement_index: None,
            not_applied: true,
        })
    }

    fn out(&mut self) -> Box<dyn Write + '_> {
        match &mut self.output {
            Some(file) => Box::new(file),
            None => Box::new(io::stdout().lock()),
        }
    }

    async fn dot_command(&mut self, line: &str) -> Flow {
        let (command, argument) = match line.split_once(char::is_whitespace) {
            Some((command, rest)) => (command, Some(rest.trim()).filter(|rest| !rest.is_empty())),
            None => (line, None),
        };
        let ok = match command {
            ".quit" | ".exit" => return Flow::Stop,
            ".help" => {
                print!("{HELP}");
                true
            }
            ".tables" => {
                let sqlite = "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
                              AND name NOT LIKE '_deeb_%' ORDER BY name";
                // The MySQL backend has no sqlite_schema.
                let mysql = "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() \
                             AND TABLE_TYPE = 'BASE TABLE' AND TABLE_NAME NOT LIKE '\\_deeb\\_%' ORDER BY TABLE_NAME";
                let result = match commands::query(&self.client, sqlite, self.level, None, None).await {
                    Err(_) => commands::query(&self.client, mysql, self.level, None, None).await,
                    found => found,
                };
                self.print_first_column(result)
            }
            ".schema" => self.print_raw(&schema_query(argument)).await,
            ".status" => self.status(false).await,
            ".nodes" => self.status(true).await,
            ".consistency" => self.set_level(argument),
            ".mode" => self.set_mode(argument),
            ".headers" => match on_off(argument) {
                Some(on) => {
                    self.headers = on;
                    true
                }
                None => usage(".headers on|off"),
            },
            ".timer" => match on_off(argument) {
                Some(on) => {
                    self.timer = on;
                    true
                }
                None => usage(".timer on|off"),
            },
            ".nullvalue" => {
                self.null = argument.unwrap_or_default().to_owned();
                true
            }
            ".output" => self.set_output(argument),
            ".read" => match argument {
                Some(path) => return self.read_file(path).await,
                None => usage(".read FILE"),
            },
            other => {
                eprintln!("error: unknown command {other}; try .help");
                false
            }
        };
        if !ok {
            self.failed = true;
            if !self.interactive && !self.keep_going {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Prints the first column of each row as is (for `.tables` and
    /// `.schema`, whose output is meant to be read or run again).
    async fn print_raw(&mut self, sql: &str) -> bool {
        let result = commands::query(&self.client, sql, self.level, None, None).await;
        self.print_first_column(result)
    }

    /// Prints each row's first value on a line of its own, or the error.
    fn print_first_column(&mut self, result: Result<commands::QueryResult, deeb_client::Error>) -> bool {
        match result {
            Ok(result) => {
                let mut text = String::new();
                for row in &result.rows {
                    if let Some(value) = row.values.first() {
                        text.push_str(&super::table::format_value(value));
                        text.push('\n');
                    }
                }
                self.out().write_all(text.as_bytes()).is_ok()
            }
            Err(error) => {
                eprintln!("error: {}", commands::describe_error(&error));
                false
            }
        }
    }

    async fn status(&mut self, members: bool) -> bool {
        match commands::status(&self.client).await {
            Ok(status) if members => print!("{}", commands::format_members(&status)),
            Ok(status) => print!("{}", commands::format_status(&status)),
            Err(error) => {
                eprintln!("error: {}", commands::describe_error(&error));
                return false;
            }
        }
        true
    }

    fn set_level(&mut self, argument: Option<&str>) -> bool {
        set_choice(&mut self.level, argument, "consistency", ".consistency linearizable|lease|stale")
    }

    fn set_mode(&mut self, argument: Option<&str>) -> bool {
        set_choice(&mut self.format, argument, "mode", ".mode table|csv|json|ndjson|line|markdown")
    }

    fn set_output(&mut self, argument: Option<&str>) -> bool {
        if let Some(file) = &mut self.output {
            if let Err(error) = file.flush() {
                eprintln!("error: writing the output: {error}");
            }
        }
        self.output = None;
        match argument {
            None | Some("stdout") => true,
            Some(path) => match File::create(path) {
                Ok(file) => {
                    self.output = Some(BufWriter::new(file));
                    true
                }
                Err(error) => {
                    eprintln!("error: {path}: {error}");
                    false
                }
            },
        }
    }

    /// `.read FILE`: runs the file's statements (not its dot commands),
    /// stopping at the first failure unless `--keep-going`.
    async fn read_file(&mut self, path: &str) -> Flow {
        let text = match std::fs::metadata(path) {
            Ok(meta) if meta.len() > READ_FILE_BYTES_MAX => {
                Err(format!("{path} is over the limit of {READ_FILE_BYTES_MAX} bytes for .read"))
            }
            _ => std::fs::read_to_string(path).map_err(|error| format!("{path}: {error}")),
        };
        let text = match text {
            Ok(text) => text,
            Err(message) => {
                eprintln!("error: {message}");
                self.failed = true;
                return if self.interactive || self.keep_going { Flow::Continue } else { Flow::Stop };
            }
        };
        let (mut statements, rest) = split_statements(&text);
        if !rest.trim().is_empty() {
            statements.push(rest.trim().to_owned());
        }
        let flow = self.run_statements(&statements).await;
        if self.interactive {
            Flow::Continue
        } else {
            flow
        }
    }
}

/// Sets `setting` to the choice `argument` names, or prints it when there
/// is no argument; false (after the usage) for an unknown choice.
fn set_choice<T: clap::ValueEnum + std::fmt::Debug>(
    setting: &mut T,
    argument: Option<&str>,
    name: &str,
    usage_text: &str,
) -> bool {
    match argument.map(|text| T::from_str(text, true)) {
        Some(Ok(choice)) => *setting = choice,
        None => println!("{name}: {setting:?}"),
        Some(Err(_)) => return usage(usage_text),
    }
    true
}

fn on_off(argument: Option<&str>) -> Option<bool> {
    match argument?.to_ascii_lowercase().as_str() {
        "on" | "yes" | "1" | "true" => Some(true),
        "off" | "no" | "0" | "false" => Some(false),
        _ => None,
    }
}

fn usage(text: &str) -> bool {
    eprintln!("error: usage: {text}");
    false
}

/// True if a query was refused because it writes (so it goes as a write).
fn is_write_refused_as_query(error: &commands::Error) -> bool {
    error.error_code == Some(ErrorCode::Refused) && error.message.starts_with("not a read-only statement")
}

/// True for statements that go to `Query` (reads) rather than `Execute`.
pub fn is_query(sql: &str) -> bool {
    let first = first_keyword(sql).to_ascii_uppercase();
    matches!(first.as_str(), "SELECT" | "WITH" | "PRAGMA" | "EXPLAIN" | "VALUES" | "SHOW" | "DESCRIBE" | "DESC")
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

/// The query behind `.schema [table]`: each statement, ready to run again.
fn schema_query(table: Option<&str>) -> String {
    let filter = match table {
        Some(name) => format!("AND name = '{}'", name.replace('\'', "''")),
        None => String::new(),
    };
    format!(
        "SELECT sql || ';' FROM sqlite_schema WHERE sql IS NOT NULL AND name NOT LIKE '_deeb_%' {filter} \
         ORDER BY type = 'table' DESC, name"
    )
}

const HELP: &str = "\
Statements end with ';' and may span lines (SQLite decides where one ends, so
trigger bodies stay whole). SELECT/WITH/PRAGMA/EXPLAIN/VALUES (and, for the
MySQL backend, SHOW/DESCRIBE) run as queries on
this node, everything else as a write (forwarded to the leader).
Ctrl-C cancels the input or the running statement; Ctrl-D leaves.
.tables                 list tables
.schema [TABLE]         CREATE statements, ready to run
.mode [FORMAT]          table, csv, json, ndjson, line or markdown
.headers on|off         column names in table, csv and markdown output
.nullvalue TEXT         how NULL shows in table, line and markdown output
.timer on|off           print each statement's run time
.output [FILE]          send results to FILE (no FILE: back to stdout)
.read FILE              run the statements in FILE
.status                 this node's status
.nodes                  cluster members
.consistency [LEVEL]    linearizable (default), lease or stale
.help                   this text
.quit                   leave
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_query_escapes_the_name() {
        assert!(schema_query(Some("a'b")).contains("name = 'a''b'"));
        assert!(!schema_query(None).contains("name ="));
    }

    #[test]
    fn classifies_reads() {
        assert!(is_query("select * from t"));
        assert!(is_query("  -- c\n WITH x AS (SELECT 1) SELECT * FROM x"));
        assert!(is_query("PRAGMA table_info(t)"));
        assert!(is_query("SHOW TABLES") && is_query("describe t"));
        assert!(is_query("VALUES (1)"));
        assert!(!is_query("INSERT INTO t VALUES (1)"));
        assert!(!is_query("BEGIN"));
        assert_eq!(first_keyword("-- only a comment"), "");
    }

    #[test]
    fn on_off_words() {
        assert_eq!(on_off(Some("ON")), Some(true));
        assert_eq!(on_off(Some("off")), Some(false));
        assert_eq!(on_off(Some("maybe")), None);
        assert_eq!(on_off(None), None);
    }
}
