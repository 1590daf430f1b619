//! A query's rows, read from the stream as they are asked for: memory holds
//! one chunk (about 1 MiB) whatever the result's size.

use std::collections::VecDeque;

use deeb_proto::QueryChunk;
use tonic::codec::Streaming;

use crate::{Error, Value};

/// The rows of a running query. Dropping it ends the query (the node stops
/// the statement).
pub struct Rows {
    stream: Streaming<QueryChunk>,
    columns: Option<Vec<String>>,
    buffered: VecDeque<Vec<Value>>,
    served_by: u64,
    done: bool,
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Rows").field("columns", &self.columns).field("served_by", &self.served_by).finish()
    }
}

impl Rows {
    pub(crate) fn new(stream: Streaming<QueryChunk>) -> Rows {
        Rows { stream, columns: None, buffered: VecDeque::new(), served_by: 0, done: false }
    }

    /// The next row, or `None` at the end.
    ///
    /// # Errors
    /// The query failed (also after some rows).
    pub async fn next(&mut self) -> Result<Option<Vec<Value>>, Error> {
        loop {
            if let Some(row) = self.buffered.pop_front() {
                return Ok(Some(row));
            }
            if self.done || !self.fill().await? {
                self.done = true;
                return Ok(None);
            }
        }
    }

    /// The column names (reads the first chunk if needed).
    ///
    /// # Errors
    /// The query failed before its first chunk.
    pub async fn columns(&mut self) -> Result<Vec<String>, Error> {
        while self.columns.is_none() && !self.done {
            if !self.fill().await? {
                self.done = true;
            }
        }
        Ok(self.columns.clone().unwrap_or_default())
    }

    /// The next chunk of rows as they came over the wire (for a printer
    /// that formats them itself), or `None` at the end. Do not mix with
    /// [`Rows::next`].
    ///
    /// # Errors
    /// The query failed.
    pub async fn next_chunk(&mut self) -> Result<Option<QueryChunk>, Error> {
        if self.done {
            return Ok(None);
        }
        let chunk = self.stream.message().await?;
        match &chunk {
            Some(chunk) => self.served_by = chunk.served_by,
            None => self.done = true,
        }
        Ok(chunk)
    }

    /// The node serving the query (0 until its first chunk).
    pub fn served_by(&self) -> u64 {
        self.served_by
    }

    /// Reads one more chunk; false at the end of the stream.
    async fn fill(&mut self) -> Result<bool, Error> {
        let Some(chunk) = self.stream.message().await? else { return Ok(false) };
        if self.columns.is_none() {
            self.columns = Some(chunk.columns.iter().map(|column| column.name.clone()).collect());
        }
        self.served_by = chunk.served_by;
        self.buffered.extend(chunk.rows.into_iter().map(|row| row.values.iter().map(Value::from).collect()));
        Ok(true)
    }
}
