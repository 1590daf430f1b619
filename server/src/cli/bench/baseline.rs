//! The baseline `bench/compare.sh` measures deeb's reads against: one
//! SQLite file behind the same gRPC API (tonic, the same messages), with
//! no raft, no event loop and no worker threads: a query runs on the
//! task that received it, on a pooled connection, and its rows go back in
//! one chunk. What a point read costs through a server with nothing of
//! deeb's in the way.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};

use deeb_core::sql::{value_from_sql, value_to_sql};
use deeb_proto::deeb_server::{Deeb, DeebServer};
use deeb_proto::{
    AddNodeRequest, AdminResponse, BackupChunk, BackupRequest, Change, Column, ExecuteRequest, ExecuteResponse,
    QueryChunk, QueryRequest, RemoveNodeRequest, Row, Statement, StatementResult, StatusRequest, StatusResponse,
    TransferLeaderRequest, WatchRequest,
};
use rusqlite::{params_from_iter, Connection};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Read connections kept for reuse.
const IDLE_READERS_MAX: usize = 64;

struct Baseline {
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    path: std::path::PathBuf,
}

/// Serves `file` on `listen` until `stop` resolves.
///
/// # Errors
/// The file cannot be opened or the address bound.
pub async fn serve(file: &Path, listen: SocketAddr, stop: impl std::future::Future<Output = ()>) -> Result<(), String> {
    let writer = Connection::open(file).map_err(|error| format!("{}: {error}", file.display()))?;
    writer
        .execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
        .map_err(|error| format!("{}: {error}", file.display()))?;
    let baseline = Baseline { writer: Mutex::new(writer), readers: Mutex::new(Vec::new()), path: file.to_owned() };
    eprintln!("baseline: {} on {listen} (no raft)", file.display());
    tonic::transport::Server::builder()
        .add_service(DeebServer::new(baseline))
        .serve_with_shutdown(listen, stop)
        .await
        .map_err(|error| error.to_string())
}

fn sql_status(error: rusqlite::Error) -> Status {
    Status::invalid_argument(error.to_string())
}

fn bind(statement: &Statement) -> impl Iterator<Item = rusqlite::types::ToSqlOutput<'_>> {
    statement.params.iter().map(value_to_sql)
}

impl Baseline {
    fn run_statement(&self, statement: &Statement) -> Result<StatementResult, Status> {
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut prepared = writer.prepare_cached(&statement.sql).map_err(sql_status)?;
        let rows_affected = prepared.execute(params_from_iter(bind(statement))).map_err(sql_status)?;
        Ok(StatementResult {
            rows_affected: rows_affected as u64,
            last_insert_id: writer.last_insert_rowid(),
            ..StatementResult::default()
        })
    }

    fn run_query(&self, statement: &Statement) -> Result<QueryChunk, Status> {
        let idle = self.readers.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => Connection::open_with_flags(&self.path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(sql_status)?,
        };
        let chunk = {
            let mut prepared = conn.prepare_cached(&statement.sql).map_err(sql_status)?;
            let columns: Vec<Column> =
                prepared.column_names().map(|name| Column { name: name.to_owned(), ..Column::default() }).collect();
            let width = columns.len();
            let mut rows = prepared.query(params_from_iter(bind(statement))).map_err(sql_status)?;
            let mut chunk = QueryChunk { columns, ..QueryChunk::default() };
            while let Some(row) = rows.next().map_err(sql_status)? {
                let values = (0..width).map(|at| row.get_ref(at).map(value_from_sql)).collect::<Result<_, _>>();
                chunk.rows.push(Row { values: values.map_err(sql_status)? });
            }
            chunk
        };
        let mut idle = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_READERS_MAX {
            idle.push(conn);
        }
        Ok(chunk)
    }
}

type Chunks<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Deeb for Baseline {
    async fn execute(&self, request: Request<ExecuteRequest>) -> Result<Response<ExecuteResponse>, Status> {
        let statements = request.into_inner().statements;
        let results = statements.iter().map(|statement| self.run_statement(statement)).collect::<Result<_, _>>()?;
        Ok(Response::new(ExecuteResponse { results, ..ExecuteResponse::default() }))
    }

    type QueryStream = Chunks<QueryChunk>;

    async fn query(&self, request: Request<QueryRequest>) -> Result<Response<Self::QueryStream>, Status> {
        let statement = request.into_inner().statement.ok_or_else(|| Status::invalid_argument("no statement"))?;
        let chunk = self.run_query(&statement)?;
        Ok(Response::new(Box::pin(tokio_stream::iter([Ok(chunk)]))))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(StatusResponse { node_id: 1, leader_id: 1, ..StatusResponse::default() }))
    }

    type BackupStream = Chunks<BackupChunk>;

    async fn backup(&self, _: Request<BackupRequest>) -> Result<Response<Self::BackupStream>, Status> {
        Err(Status::unimplemented("the baseline has no backup"))
    }

    type WatchStream = Chunks<Change>;

    async fn watch(&self, _: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("the baseline has no change stream"))
    }

    async fn add_node(&self, _: Request<AddNodeRequest>) -> Result<Response<AdminResponse>, Status> {
        Err(Status::unimplemented("the baseline has one node"))
    }

    async fn remove_node(&self, _: Request<RemoveNodeRequest>) -> Result<Response<AdminResponse>, Status> {
        Err(Status::unimplemented("the baseline has one node"))
    }

    async fn transfer_leader(&self, _: Request<TransferLeaderRequest>) -> Result<Response<AdminResponse>, Status> {
        Err(Status::unimplemented("the baseline has one node"))
    }
}
