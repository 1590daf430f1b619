//! `deeb shell`: an interactive SQL shell that also works with piped stdin.

use std::io::{IsTerminal, Write as _};

use tokio::io::{AsyncBufReadExt, BufReader};

use super::args::Level;
use super::commands::{self, Client};
use super::split::{is_query, StatementSplitter};
use super::table;

/// The shell's state between commands.
pub struct Shell {
    client: Client,
    level: Level,
    interactive: bool,
}

/// What a dot command asks the loop to do.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

impl Shell {
    /// A shell on a connected client.
    pub fn new(client: Client) -> Self {
        Self { client, level: Level::Linearizable, interactive: std::io::stdin().is_terminal() }
    }

    /// Reads stdin until EOF or `.quit`.
    ///
    /// # Errors
    /// Reading stdin failed.
    pub async fn run(&mut self) -> std::io::Result<()> {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        let mut splitter = StatementSplitter::default();
        self.prompt(true);
        while let Some(line) = lines.next_line().await? {
            if splitter.is_empty() && line.trim_start().starts_with('.') {
                if self.dot_command(line.trim()).await == Flow::Quit {
                    return Ok(());
                }
            } else {
                for sql in splitter.push_line(&line) {
                    self.run_statement(&sql).await;
                }
            }
            self.prompt(splitter.is_empty());
        }
        if let Some(sql) = splitter.take_rest() {
            self.run_statement(&sql).await;
        }
        Ok(())
    }

    fn prompt(&self, fresh: bool) {
        if self.interactive {
            print!("{}", if fresh { "deeb> " } else { "   ...> " });
            let _ = std::io::stdout().flush();
        }
    }

    async fn run_statement(&mut self, sql: &str) {
        if is_query(sql) {
            match commands::query(&mut self.client, sql, self.level, None, None).await {
                Ok(result) => print!("{}", table::render(&result.columns, &result.rows)),
                Err(status) => eprintln!("error: {}", commands::describe_error(&status)),
            }
        } else {
            match commands::execute(&mut self.client, sql).await {
                Ok(response) => print!("{}", commands::format_execute(&response)),
                Err(status) => eprintln!("error: {}", commands::describe_error(&status)),
            }
        }
    }

    async fn dot_command(&mut self, line: &str) -> Flow {
        let mut words = line.split_whitespace();
        let command = words.next().unwrap_or_default();
        let argument = words.next();
        match command {
            ".quit" | ".exit" => return Flow::Quit,
            ".help" => print!("{HELP}"),
            ".tables" => {
                let sql = "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
                           AND name NOT LIKE '_deeb_%' ORDER BY name";
                self.run_statement(sql).await;
            }
            ".schema" => self.run_statement(&schema_query(argument)).await,
            ".status" => self.status(false).await,
            ".nodes" => self.status(true).await,
            ".consistency" => self.set_level(argument),
            other => eprintln!("error: unknown command {other}; try .help"),
        }
        Flow::Continue
    }

    async fn status(&mut self, members: bool) {
        match commands::status(&mut self.client).await {
            Ok(status) if members => print!("{}", commands::format_members(&status)),
            Ok(status) => print!("{}", commands::format_status(&status)),
            Err(status) => eprintln!("error: {}", commands::describe_error(&status)),
        }
    }

    fn set_level(&mut self, argument: Option<&str>) {
        use clap::ValueEnum as _;
        match argument.map(|name| Level::from_str(name, true)) {
            Some(Ok(level)) => {
                self.level = level;
                println!("consistency: {level:?}");
            }
            None => println!("consistency: {:?}", self.level),
            Some(Err(_)) => eprintln!("error: expected linearizable, lease or stale"),
        }
    }
}

/// The query behind `.schema [table]`.
fn schema_query(table: Option<&str>) -> String {
    let filter = match table {
        Some(name) => format!("AND name = '{}'", name.replace('\'', "''")),
        None => String::new(),
    };
    format!("SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND name NOT LIKE '_deeb_%' {filter} ORDER BY name")
}

const HELP: &str = "\
Statements end with ';' and may span lines. SELECT/WITH/PRAGMA/EXPLAIN/VALUES
run as queries, everything else as a write (forwarded to the leader).
.tables               list tables
.schema [TABLE]       show CREATE statements
.status               this node's status
.nodes                cluster members
.consistency [LEVEL]  linearizable (default), lease or stale
.help                 this text
.quit                 leave
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_query_escapes_the_name() {
        assert!(schema_query(Some("a'b")).contains("name = 'a''b'"));
        assert!(!schema_query(None).contains("name ="));
    }
}
