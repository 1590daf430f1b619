//! Read-only connections serving client queries.

use deeb_proto::{Column, QueryChunk, Row, Statement, Value};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;

use super::session::{self, Authorizer, Progress};
use super::{classify, value, QueryError, StatementError};

/// A read-only connection. `Send`, so a host may run queries off its event
/// loop. Tables named `_deeb_*` may be read (they hold no secrets). Dropped,
/// it goes back to the pool it came from (opening a connection costs more
/// than a point query: the file, the WAL index, the schema).
pub struct Reader {
    /// Taken only when the reader is dropped.
    pooled: Option<PooledConnection>,
    home: Option<IdleReaders>,
    /// SQLite VM steps one query may run.
    steps_max: u64,
    row_bytes_max: usize,
}

/// A read connection and what it learned of the schema.
pub(crate) struct PooledConnection {
    conn: Connection,
    /// Tables whose rowid a query may not read.
    hidden_rowid: classify::KeyedRowidCache,
}

/// Read connections not in use, for the next reader.
pub(crate) type IdleReaders = Arc<Mutex<Vec<PooledConnection>>>;

/// Idle read connections kept at most (more readers at once than this
/// open connections of their own, dropped when done).
pub(crate) const IDLE_READERS_MAX: usize = 32;

impl Drop for Reader {
    fn drop(&mut self) {
        let (Some(pooled), Some(home)) = (self.pooled.take(), self.home.as_ref()) else { return };
        // A connection left inside a transaction is not reused.
        if !pooled.conn.is_autocommit() {
            return;
        }
        let mut idle = home.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_READERS_MAX {
            idle.push(pooled);
        }
    }
}

fn sql_err(e: rusqlite::Error) -> QueryError {
    QueryError::Sql(e.to_string())
}

impl Reader {
    /// A reader on `conn`; no value or row it reads may be larger than
    /// `row_bytes_max` (the largest a write may build, so whatever can be
    /// written can be read back, and a result's messages stay bounded).
    pub(crate) fn new(conn: Connection, steps_max: u64, row_bytes_max: usize) -> Self {
        session::set_length_limit(&conn, row_bytes_max);
        let pooled = PooledConnection { conn, hidden_rowid: classify::KeyedRowidCache::default() };
        Reader { pooled: Some(pooled), home: None, steps_max, row_bytes_max }
    }

    /// A reader on an idle connection of `home` if there is one (else on
    /// one `open` makes), going back to `home` when dropped.
    pub(crate) fn pooled(
        home: &IdleReaders,
        open: impl FnOnce() -> rusqlite::Result<Connection>,
        steps_max: u64,
        row_bytes_max: usize,
    ) -> rusqlite::Result<Self> {
        let idle = home.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut reader = match idle {
            Some(pooled) => Reader { pooled: Some(pooled), home: None, steps_max, row_bytes_max },
            None => Reader::new(open()?, steps_max, row_bytes_max),
        };
        reader.home = Some(home.clone());
        Ok(reader)
    }

    fn conn(&self) -> &Connection {
        &self.pooled.as_ref().expect("a reader holds its connection until dropped").conn
    }

    /// Copies the whole database into a new file at `dest` (`VACUUM INTO`,
    /// from one read transaction: one committed state, at or after this
    /// reader's read index), and returns the applied index the copy holds.
    ///
    /// # Errors
    /// The copy failed (no space, say); `dest` may then hold part of it.
    pub fn copy_into(&self, dest: &std::path::Path) -> Result<u64, QueryError> {
        let dest_str = dest.to_str().ok_or_else(|| QueryError::Sql(format!("not UTF-8: {}", dest.display())))?;
        self.conn().execute("VACUUM INTO ?1", [dest_str]).map_err(sql_err)?;
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let copy = Connection::open_with_flags(dest, flags).map_err(sql_err)?;
        let applied = super::state_machine::read_applied(&copy).map_err(|error| QueryError::Sql(error.to_string()))?;
        Ok(applied.index)
    }

    /// Runs a read-only statement with no stop other than its steps bound;
    /// see [`Reader::query_until`].
    pub fn query(
        &self,
        statement: &Statement,
        rows_max: usize,
        bytes_max: usize,
        sink: &mut dyn FnMut(QueryChunk) -> bool,
    ) -> Result<(), QueryError> {
        self.query_until(statement, rows_max, bytes_max, Box::new(|| None), sink)
    }

    /// Runs a read-only statement, handing the result to `sink` in chunks of
    /// at most `rows_max` rows and about `bytes_max` bytes; the first chunk
    /// carries the columns (and is sent even if there are no rows). Stops
    /// early when `sink` returns false. The statement runs in its own read
    /// transaction, so it sees one committed state.
    ///
    /// `stop` is asked every few thousand SQLite steps while the statement
    /// runs (also between rows); a `Some(reason)` ends it at once with
    /// [`QueryError::Stopped`], as does running more than the steps bound.
    pub fn query_until(
        &self,
        statement: &Statement,
        rows_max: usize,
        bytes_max: usize,
        mut stop: Box<dyn FnMut() -> Option<String> + '_>,
        sink: &mut dyn FnMut(QueryChunk) -> bool,
    ) -> Result<(), QueryError> {
        if let Some(reason) = classify::refuse_read(&statement.sql) {
            return Err(QueryError::NotReadOnly(reason));
        }
        let pooled = self.pooled.as_ref().expect("a reader holds its connection until dropped");
        let hidden_rowid = pooled.hidden_rowid.get(&pooled.conn).map_err(sql_err)?.hidden_rowid;
        let auth = Authorizer::new(self.conn(), |action, a, b, _db, _trigger| {
            classify::read_policy(action, a, b, &hidden_rowid)
        })
        .map_err(sql_err)?;
        let (steps_max, mut steps) = (self.steps_max, 0u64);
        let progress = Progress::new(
            self.conn(),
            Box::new(move || {
                steps += session::PROGRESS_STEPS;
                if steps > steps_max {
                    return Some(StatementError::timeout(format!(
                        "query stopped: it ran more than {steps_max} SQLite steps"
                    )));
                }
                stop().map(StatementError::timeout)
            }),
        );
        let row_bytes_max = self.row_bytes_max;
        let refused = |e: rusqlite::Error| match (auth.denied(), progress.stopped()) {
            (Some(reason), _) => QueryError::NotReadOnly(reason),
            (None, Some(stopped)) => QueryError::Stopped(stopped.message),
            (None, None) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::TooBig) => {
                QueryError::Limit(format!("{e} ({})", super::state_machine::value_limit_text(row_bytes_max)))
            }
            (None, None) => sql_err(e),
        };
        let mut stmt = self.conn().prepare(&statement.sql).map_err(refused)?;
        if !stmt.readonly() {
            return Err(QueryError::NotReadOnly(statement.sql.clone()));
        }
        value::bind(&mut stmt, statement).map_err(QueryError::Sql)?;
        let columns: Vec<Column> = stmt
            .columns()
            .map(|c| Column { name: c.name().to_string(), declared_type: c.decl_type().unwrap_or("").to_string() })
            .collect();
        let width = columns.len();
        let mut chunk = QueryChunk { columns, ..QueryChunk::default() };
        let (mut bytes, mut sent) = (0usize, false);
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next().map_err(refused)? {
            let values = (0..width)
                .map(|i| row.get_ref(i).map(value::from_sql))
                .collect::<Result<Vec<Value>, _>>()
                .map_err(sql_err)?;
            let row_bytes = values.iter().map(value::approx_size).sum::<usize>();
            if row_bytes > self.row_bytes_max {
                return Err(QueryError::Limit(format!(
                    "a row of the result is {row_bytes} bytes, over the limit of {} bytes for one row \
                     (request_row_changes_bytes_max, the largest a write may build)",
                    self.row_bytes_max
                )));
            }
            bytes += row_bytes;
            chunk.rows.push(Row { values });
            if chunk.rows.len() >= rows_max.max(1) || bytes >= bytes_max {
                sent = true;
                bytes = 0;
                if !sink(std::mem::take(&mut chunk)) {
                    return Ok(());
                }
            }
        }
        if !sent || !chunk.rows.is_empty() {
            sink(chunk);
        }
        Ok(())
    }
}
