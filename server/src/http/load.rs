//! `POST /db/load`, rqlite's restore, as `deeb restore --addr` does it. A
//! SQLite file (by its header) is written to the node's scratch directory
//! and replaces the whole database, atomically, through the log (pieces,
//! installed by every node at the last: `deeb_proto::RestorePart`). SQL
//! text is read as it arrives and its statements run in requests of
//! bounded size (`deeb_core::sql::load`), each one transaction, retried
//! with its idempotency key while its outcome is unknown; not atomic: a
//! failed request stops the load and the answer says how far it got.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Response;
use deeb_core::sql::load::Loader;
use deeb_proto::deeb_server::Deeb as _;
use deeb_proto::{ExecuteRequest, QueryRequest};
use serde_json::json;
use tokio_stream::StreamExt as _;

use super::rqlite::{bad_request, json_response, text, Failure, Params};
use super::Call;
use crate::restore::{
    outcome_query, piece, read_piece, GZIP_MAGIC, NO_OUTCOMES, PIECE_BYTES, REQUEST_BYTES, SQLITE_MAGIC,
};
use crate::security::Permission;

/// Statements per request (the server's default limit is 1000).
const REQUEST_STATEMENTS: usize = 500;

/// Loads a SQL dump or a SQLite file (the `backup` permission, and
/// `execute` for its statements).
#[utoipa::path(post, path = "/db/load", operation_id = "db_load", tag = "rqlite",
    request_body(content = String, description = "SQL text (a dump; `text/plain`) or a SQLite file \
        (`application/octet-stream`)"),
    responses(
        (status = 200, description = "A SQLite file replaced the whole database (`restored`: its bytes and the \
            nodes' outcome), or SQL text loaded (`loaded`: statements, requests, and statements left out: the \
            dump's transaction control, PRAGMA, sqlite_sequence); or it failed (`error`: for SQL text, how far \
            the load got; a SQLite file leaves the old state)"),
        (status = 400, description = "The body is empty, or not UTF-8 SQL text or a SQLite file", body = String,
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
    let loader = Loader::new(REQUEST_STATEMENTS, REQUEST_BYTES);
    if head.is_empty() {
        return bad_request("an empty body: send SQL text or a SQLite file".into());
    }
    if head.starts_with(GZIP_MAGIC) {
        return bad_request(
            "a gzip-compressed body: decompress it first (gunzip), or load the file with deeb restore, which does"
                .into(),
        );
    }
    let mut load = Load { call: &call, loader, requests: 0, loaded: 0, restored: None };
    let started = Instant::now();
    let loaded = match head.starts_with(SQLITE_MAGIC.as_slice()) {
        true => load.sqlite_file(head, chunks).await,
        false => load.sql_text(head, chunks).await,
    };
    if let Err(response) = loaded {
        return response;
    }
    let body = match &load.restored {
        Some((bytes, outcome)) => json!({
            "results": [],
            "restored": { "bytes": bytes, "outcome": outcome },
            "time": started.elapsed().as_secs_f64(),
        }),
        None => json!({
            "results": [],
            "loaded": { "statements": load.loaded, "requests": load.requests, "left_out": load.loader.skipped },
            "time": started.elapsed().as_secs_f64(),
        }),
    };
    json_response(StatusCode::OK, &params, &body, 0)
}

type BodyChunks = axum::body::BodyDataStream;

struct Load<'c> {
    call: &'c Call,
    loader: Loader,
    requests: u64,
    loaded: u64,
    /// A SQLite file installed: its size and the nodes' outcome.
    restored: Option<(u64, String)>,
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

    /// A SQLite file: written to the scratch directory (removed however
    /// it ends), then proposed in pieces that replace the whole database
    /// at the last (`deeb_proto::RestorePart`), as `deeb restore` does;
    /// the outcome is read back.
    #[cfg(not(madsim))]
    async fn sqlite_file(&mut self, head: Vec<u8>, mut chunks: BodyChunks) -> Result<(), Response> {
        let (dir, _running) = self.call.api.scratch().map_err(|status| Failure::of(&status).into_response())?;
        let scratch = Scratch::new(&dir).map_err(|error| internal(&error))?;
        let mut file = std::fs::File::create(&scratch.0).map_err(|error| internal(&error.to_string()))?;
        let (mut received, mut total, mut crc32c) = (head, 0_u64, 0_u32);
        loop {
            tokio::task::block_in_place(|| file.write_all(&received)).map_err(|error| internal(&error.to_string()))?;
            (total, crc32c) = (total + received.len() as u64, crc32c::crc32c_append(crc32c, &received));
            match chunks.next().await {
                Some(Ok(chunk)) => received = chunk.to_vec(),
                Some(Err(error)) => return Err(bad_request(format!("reading the body: {error}"))),
                None => break,
            }
        }
        drop(file);
        let mut reader = std::fs::File::open(&scratch.0).map_err(|error| internal(&error.to_string()))?;
        let id = deeb_client::new_idempotency_key();
        let (mut buffer, mut offset) = (vec![0; PIECE_BYTES], 0_u64);
        loop {
            let read = tokio::task::block_in_place(|| read_piece(&mut reader, &mut buffer))
                .map_err(|error| internal(&error.to_string()))?;
            let part = piece(&id, offset, buffer[..read].to_vec(), (total, crc32c));
            let last = part.last;
            if read == 0 && !last {
                return Err(internal("the received file shrank while it was read"));
            }
            let message = ExecuteRequest { restore: Some(part), ..Default::default() };
            // The last piece's entry installs the whole file, which may
            // outlast a request's timeout: `execute` sends it again (a piece
            // applied twice changes nothing) until one is answered.
            if let Err(status) = self.execute(message).await {
                let context = match last {
                    // Refused before it was proposed: nothing applied.
                    _ if status.code() == tonic::Code::InvalidArgument => "the database keeps its old state".to_owned(),
                    true => "the restore's last piece got no answer: its outcome is unknown until the nodes answer \
                             (`SELECT * FROM _deeb_restores` on any node shows it)"
                        .to_owned(),
                    false => {
                        format!("the restore stopped at byte {offset} of {total}; the database keeps its old state")
                    }
                };
                return Err(with_context(&status, &context));
            }
            offset += read as u64;
            if last {
                break;
            }
        }
        let outcome = self.restore_outcome(&id).await?;
        match outcome {
            Some(outcome) if outcome.starts_with("installed") => {
                self.restored = Some((total, outcome));
                Ok(())
            }
            Some(outcome) => Err(Failure::Statement(format!(
                "the nodes did not take the file: {outcome}; the database keeps its old state"
            ))
            .into_response()),
            None => Err(Failure::Unavailable(
                "the restore did not complete (the leader changed while it ran); the database keeps its old state: \
                 load it again"
                    .into(),
            )
            .into_response()),
        }
    }

    /// What restore `id` came to, read linearizably (none: it did not
    /// complete).
    #[cfg(not(madsim))]
    async fn restore_outcome(&self, id: &str) -> Result<Option<String>, Response> {
        let request = QueryRequest {
            statement: Some(crate::api::statement(&outcome_query(id))),
            consistency: deeb_proto::Consistency::Linearizable as i32,
            ..Default::default()
        };
        let unreadable = |status: &tonic::Status| with_context(status, "the restore's outcome could not be read");
        // No such table: no restore ever completed on this cluster.
        let absent = |status: &tonic::Status| status.message().contains(NO_OUTCOMES);
        let mut chunks = match self.call.api.query(self.call.request(request)).await {
            Ok(chunks) => chunks.into_inner(),
            Err(status) if absent(&status) => return Ok(None),
            Err(status) => return Err(unreadable(&status)),
        };
        let mut outcome = None;
        while let Some(chunk) = chunks.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(status) if absent(&status) => return Ok(None),
                Err(status) => return Err(unreadable(&status)),
            };
            let text = chunk.rows.first().and_then(|row| row.values.first()).and_then(|value| match &value.kind {
                Some(deeb_proto::value::Kind::Text(text)) => Some(text.clone()),
                _ => None,
            });
            outcome = outcome.or(text);
        }
        Ok(outcome)
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

    /// Runs one request of statements; on failure, says how far the load got.
    async fn send(&mut self, request: Vec<String>) -> Result<(), Response> {
        let count = request.len() as u64;
        let statements = request.iter().map(|sql| crate::api::statement(sql)).collect();
        let message = ExecuteRequest { statements, idempotency_key: deeb_client::new_idempotency_key(), restore: None };
        match self.execute(message).await {
            Ok(()) => {
                (self.requests, self.loaded) = (self.requests + 1, self.loaded + count);
                Ok(())
            }
            Err(status) => Err(with_context(&status, &self.how_far())),
        }
    }

    /// Runs one request, sent again (with its key, if it has one) while
    /// its outcome is unknown.
    async fn execute(&self, message: ExecuteRequest) -> Result<(), tonic::Status> {
        let (mut wait, mut attempt) = (std::time::Duration::from_millis(50), 0);
        loop {
            attempt += 1;
            match self.call.api.execute(self.call.request(message.clone())).await {
                Ok(_) => return Ok(()),
                Err(status) if attempt <= RETRIES_MAX && deeb_client::Error::from(status.clone()).worth_retrying() => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(1));
                }
                Err(status) => return Err(status),
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
/// The failure `status` as an answer, its message followed by `context`.
fn with_context(status: &tonic::Status, context: &str) -> Response {
    match Failure::of(status) {
        Failure::Statement(error) | Failure::Refused(error) => Failure::Statement(format!("{error}; {context}")),
        Failure::Unavailable(error) => Failure::Unavailable(format!("{error}; {context}")),
        other => other,
    }
    .into_response()
}

#[cfg_attr(madsim, allow(dead_code))]
fn internal(error: &str) -> Response {
    text(StatusCode::INTERNAL_SERVER_ERROR, format!("load: {error}"))
}

/// A loaded SQLite file, removed when dropped.
#[cfg_attr(madsim, allow(dead_code))]
struct Scratch(PathBuf);

#[cfg_attr(madsim, allow(dead_code))]
impl Scratch {
    fn new(dir: &Path) -> Result<Scratch, String> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        std::fs::create_dir_all(dir).map_err(|error| format!("scratch directory: {error}"))?;
        let number = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Scratch(dir.join(format!("load-{number}.db"))))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
