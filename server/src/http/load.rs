//! `POST /db/load`, rqlite's restore: a dump loaded through the write path,
//! as `deeb restore --addr` does. SQL text is read as it arrives; a SQLite
//! file (by its header) is written to the node's scratch directory, dumped
//! to SQL there and read back. Either way the statements run in requests
//! of bounded size (`deeb_core::sql::load`), each one transaction, retried
//! with its idempotency key while its outcome is unknown. Not atomic: a
//! failed request stops the load and the answer says how far it got.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Response;
use deeb_core::sql::load::Loader;
use deeb_proto::deeb_server::Deeb as _;
use deeb_proto::ExecuteRequest;
use serde_json::json;
use tokio_stream::StreamExt as _;

use super::rqlite::{bad_request, json_response, text, Failure, Params};
use super::Call;
use crate::security::Permission;

/// SQLite's file header.
const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";
/// Statements per request, and bytes of SQL text (the server's default
/// limits are 1000 and 4 MiB).
const REQUEST_STATEMENTS: usize = 500;
const REQUEST_BYTES: usize = 1 << 20;

/// Loads a SQL dump or a SQLite file (the `backup` permission, and
/// `execute` for its statements).
#[utoipa::path(post, path = "/db/load", operation_id = "db_load", tag = "rqlite",
    request_body(content = String, description = "SQL text (a dump; `text/plain`) or a SQLite file \
        (`application/octet-stream`)"),
    responses(
        (status = 200, description = "Loaded (`loaded`: statements, requests, and statements left out: the \
            dump's transaction control, PRAGMA, sqlite_sequence), or a request failed (`error` says how far the \
            load got)"),
        (status = 400, description = "The body is not UTF-8 SQL text or a SQLite file", body = String,
            content_type = "text/plain"),
        (status = 503, description = "No leader or no quorum: the answer says how far the load got", body = String,
            content_type = "text/plain"),
    ))]
pub async fn load(call: Call, Query(params): Query<Params>, body: Body) -> Response {
    if let Err(status) = call.api.cluster_view(&call.request(()), Permission::Backup).await {
        return Failure::of(&status).into_response();
    }
    let mut chunks = body.into_data_stream();
    let mut head = Vec::new();
    while head.len() < SQLITE_MAGIC.len() {
        match chunks.next().await {
            Some(Ok(chunk)) => head.extend_from_slice(&chunk),
            Some(Err(error)) => return bad_request(format!("reading the body: {error}")),
            None => break,
        }
    }
    let mut load = Load { call: &call, loader: Loader::new(REQUEST_STATEMENTS, REQUEST_BYTES), requests: 0, loaded: 0 };
    let started = Instant::now();
    let loaded = match head.starts_with(SQLITE_MAGIC) {
        true => load.sqlite_file(head, chunks).await,
        false => load.sql_text(head, chunks).await,
    };
    if let Err(response) = loaded {
        return response;
    }
    let body = json!({
        "results": [],
        "loaded": { "statements": load.loaded, "requests": load.requests, "left_out": load.loader.skipped },
        "time": started.elapsed().as_secs_f64(),
    });
    json_response(StatusCode::OK, &params, &body, 0)
}

type BodyChunks = axum::body::BodyDataStream;

struct Load<'c> {
    call: &'c Call,
    loader: Loader,
    requests: u64,
    loaded: u64,
}

impl Load<'_> {
    /// SQL text as it arrives (pieces split inside a character wait for
    /// the rest of it).
    async fn sql_text(&mut self, head: Vec<u8>, mut chunks: BodyChunks) -> Result<(), Response> {
        let mut carry = head;
        loop {
            let valid = match std::str::from_utf8(&carry) {
                Ok(text) => text.len(),
                Err(error) if error.error_len().is_none() => error.valid_up_to(),
                Err(error) => {
                    return Err(bad_request(format!("the body is not UTF-8 SQL text: {error}; {}", self.how_far())))
                }
            };
            let text = std::str::from_utf8(&carry[..valid]).expect("checked above").to_owned();
            carry.drain(..valid);
            self.feed(&text).await?;
            match chunks.next().await {
                Some(Ok(chunk)) => carry.extend_from_slice(&chunk),
                Some(Err(error)) => return Err(bad_request(format!("reading the body: {error}"))),
                None if carry.is_empty() => return self.finish().await,
                None => return Err(bad_request("the body ends inside a UTF-8 character".into())),
            }
        }
    }

    /// A SQLite file: written to the scratch directory, dumped to SQL
    /// there, read back line by line; both files removed however it ends.
    #[cfg(not(madsim))]
    async fn sqlite_file(&mut self, head: Vec<u8>, mut chunks: BodyChunks) -> Result<(), Response> {
        let (dir, _running) = self.call.api.scratch().map_err(|status| Failure::of(&status).into_response())?;
        let scratch = Scratch::new(&dir).map_err(|error| internal(&error))?;
        let mut file = std::fs::File::create(&scratch.database).map_err(|error| internal(&error.to_string()))?;
        let mut piece = head;
        loop {
            tokio::task::block_in_place(|| file.write_all(&piece)).map_err(|error| internal(&error.to_string()))?;
            match chunks.next().await {
                Some(Ok(chunk)) => piece = chunk.to_vec(),
                Some(Err(error)) => return Err(bad_request(format!("reading the body: {error}"))),
                None => break,
            }
        }
        drop(file);
        let (database, sql) = (scratch.database.clone(), scratch.sql.clone());
        let dumped = tokio::task::spawn_blocking(move || crate::backup::dump_to(&database, &sql)).await;
        match dumped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(bad_request(format!("the body is not a usable SQLite file: {error}"))),
            Err(error) => return Err(internal(&error.to_string())),
        }
        let opened = std::fs::File::open(&scratch.sql).map_err(|error| internal(&error.to_string()))?;
        let mut reader = std::io::BufReader::new(opened);
        let mut line = String::new();
        loop {
            line.clear();
            let read = tokio::task::block_in_place(|| reader.read_line(&mut line));
            match read.map_err(|error| internal(&error.to_string()))? {
                0 => return self.finish().await,
                _ => self.feed(&line).await?,
            }
        }
    }

    /// The simulator has no threads to write and dump files on.
    #[cfg(madsim)]
    async fn sqlite_file(&mut self, _: Vec<u8>, _: BodyChunks) -> Result<(), Response> {
        Err(text(StatusCode::NOT_IMPLEMENTED, "loading SQLite files is not simulated".into()))
    }

    async fn feed(&mut self, text: &str) -> Result<(), Response> {
        let full = match self.loader.feed(text) {
            Ok(full) => full,
            Err(error) => return Err(self.failed(&error)),
        };
        for request in full {
            self.send(request).await?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), Response> {
        let full = match self.loader.finish() {
            Ok(full) => full,
            Err(error) => return Err(self.failed(&error)),
        };
        for request in full {
            self.send(request).await?;
        }
        Ok(())
    }

    /// Runs one request, retrying with its key while the outcome is unknown.
    async fn send(&mut self, request: Vec<String>) -> Result<(), Response> {
        let count = request.len() as u64;
        let statements = request.iter().map(|sql| crate::api::statement(sql)).collect();
        let message = ExecuteRequest { statements, idempotency_key: deeb_client::new_idempotency_key() };
        let (mut wait, mut attempt) = (std::time::Duration::from_millis(50), 0);
        loop {
            attempt += 1;
            match self.call.api.execute(self.call.request(message.clone())).await {
                Ok(_) => {
                    (self.requests, self.loaded) = (self.requests + 1, self.loaded + count);
                    return Ok(());
                }
                Err(status) => {
                    if attempt <= RETRIES_MAX && deeb_client::Error::from(status.clone()).worth_retrying() {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(std::time::Duration::from_secs(1));
                        continue;
                    }
                    let how_far = self.how_far();
                    return Err(match Failure::of(&status) {
                        Failure::Statement(error) | Failure::Refused(error) => {
                            Failure::Statement(format!("{error}; {how_far}"))
                        }
                        Failure::Unavailable(error) => Failure::Unavailable(format!("{error}; {how_far}")),
                        other => other,
                    }
                    .into_response());
                }
            }
        }
    }

    fn how_far(&self) -> String {
        format!(
            "request {} of the load failed: the {} requests before it ({} statements) are loaded, this one and the \
             rest are not",
            self.requests + 1,
            self.requests,
            self.loaded
        )
    }

    fn failed(&self, error: &str) -> Response {
        Failure::Statement(format!("{error}; {}", self.how_far())).into_response()
    }
}

/// Retries of one request whose outcome is unknown (with waits up to 1 s:
/// about half a minute).
const RETRIES_MAX: u32 = 30;

#[cfg_attr(madsim, allow(dead_code))]
fn internal(error: &str) -> Response {
    text(StatusCode::INTERNAL_SERVER_ERROR, format!("load: {error}"))
}

/// A loaded SQLite file and its dump, removed when dropped.
#[cfg_attr(madsim, allow(dead_code))]
struct Scratch {
    database: PathBuf,
    sql: PathBuf,
}

#[cfg_attr(madsim, allow(dead_code))]
impl Scratch {
    fn new(dir: &Path) -> Result<Scratch, String> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        std::fs::create_dir_all(dir).map_err(|error| format!("scratch directory: {error}"))?;
        let number = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Scratch { database: dir.join(format!("load-{number}.db")), sql: dir.join(format!("load-{number}.sql")) })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.database);
        let _ = std::fs::remove_file(&self.sql);
    }
}
