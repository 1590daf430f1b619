//! deeb's own JSON API under `/api/v1/`: the gRPC service's calls with its
//! messages' fields as JSON, query results streamed as newline-delimited
//! JSON, one `QueryChunk` per line, as the rows are read (bounded chunks, a
//! bounded queue: a result larger than memory streams with flat memory).
//!
//! Values are `{"integer": 1}`, `{"real": 1.5}`, `{"text": "x"}`,
//! `{"blob": "<base64>"}` (the `Value` oneof's arms) or `null`; enums are
//! their proto names. A failure is `{"error": {...}}` (the `ErrorDetail`
//! fields, the code by name, and the message) with the HTTP code of
//! [`crate::errors::http_code`]; a query that fails after its first rows
//! were sent ends with that object as its last line.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Query};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use deeb_proto::deeb_server::Deeb as _;
use deeb_proto::value::Kind;
use deeb_proto::ErrorCode;
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt as _;
use utoipa::ToSchema;

use super::Call;
use crate::api::DeebService;
use crate::errors::http_code;

/// One SQL value: one of the four arms, or `null` for NULL.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SqlValue {
    Integer(i64),
    Real(f64),
    Text(String),
    /// Base64 (standard alphabet, padded).
    Blob(String),
}

/// A named parameter, with its prefix (`:id`, `@id`, `$id`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NamedValue {
    name: String,
    #[serde(default)]
    value: Option<SqlValue>,
}

/// One statement with positional or named parameters (not both).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// One SQL statement.
    #[schema(min_length = 1)]
    sql: String,
    #[serde(default)]
    params: Vec<Option<SqlValue>>,
    #[serde(default)]
    named_params: Vec<NamedValue>,
}

/// Statements applied atomically, through the leader.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    statements: Vec<Statement>,
    /// At most 128 bytes: a retry with the same key is answered with the
    /// first request's results instead of being applied again.
    #[serde(default)]
    idempotency_key: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Column {
    name: String,
    /// The declared type, empty for an expression.
    declared_type: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Row {
    values: Vec<Option<SqlValue>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatementResult {
    rows_affected: u64,
    last_insert_id: i64,
    /// Rows the statement returned (RETURNING), as the leader ran it.
    columns: Vec<Column>,
    rows: Vec<Row>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExecuteResponse {
    results: Vec<StatementResult>,
    /// The node that executed the request (the leader).
    served_by: u64,
    /// The log index the request was applied at.
    index: u64,
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
pub enum Consistency {
    /// Confirmed with a quorum (read index): sees every write acknowledged
    /// before the read began.
    #[default]
    #[serde(rename = "CONSISTENCY_LINEARIZABLE")]
    Linearizable,
    /// The leader's lease (no quorum round trip; relies on bounded clock drift).
    #[serde(rename = "CONSISTENCY_LEASE")]
    Lease,
    /// This node's data as it is, optionally bounded by `max_staleness_ms`.
    #[serde(rename = "CONSISTENCY_STALE")]
    Stale,
}

/// One read-only statement.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    statement: Statement,
    #[serde(default)]
    consistency: Consistency,
    /// For `CONSISTENCY_STALE`: the longest a write acknowledged before the
    /// read may be missing from it; 0 is unbounded.
    #[serde(default)]
    max_staleness_ms: u64,
    /// How long the statement may run; 0 is the server's default.
    #[serde(default)]
    timeout_ms: u64,
}

/// One line of a query's response: the columns (first line only) and a
/// bounded run of rows.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueryChunk {
    columns: Vec<Column>,
    rows: Vec<Row>,
    served_by: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberStatus {
    node_id: u64,
    /// The peer address.
    address: String,
    learner: bool,
    /// The leader's match index for the member (0 elsewhere, or unknown).
    matched: u64,
    next_index: u64,
    /// Where clients reach the member over gRPC, as heard from it.
    client_address: String,
    /// Where its HTTP API is reached, as heard from it.
    http_address: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusResponse {
    node_id: u64,
    /// `leader`, `follower`, `candidate` or `precandidate`.
    role: String,
    term: u64,
    /// 0 while no leader is known.
    leader_id: u64,
    commit_index: u64,
    applied_index: u64,
    members: Vec<MemberStatus>,
    /// `u64::MAX` if the leader was never heard.
    ms_since_leader_contact: u64,
    snapshot_index: u64,
    /// With `?with_digest=true`: the ordered hash of every table, and the
    /// applied index it was computed at.
    digest: u64,
    digest_index: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddNodeRequest {
    node_id: u64,
    /// The node's peer address.
    address: String,
    #[serde(default)]
    learner: bool,
    /// Only promote the node if it is a learner now.
    #[serde(default)]
    promote: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveNodeRequest {
    node_id: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferLeaderRequest {
    node_id: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminResponse {
    served_by: u64,
}

/// Why a call failed: the gRPC `ErrorDetail`, with the message.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// An `ErrorCode` name, e.g. `ERROR_CODE_SQL`; branch on this, not on
    /// the message.
    code: String,
    message: String,
    /// SQLite's extended result code, 0 if SQLite did not fail.
    sqlite_code: i32,
    /// The failing statement's index in the request.
    statement_index: Option<u32>,
    /// True if the request certainly had no effect (safe to send again).
    not_applied: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Failure {
    error: ErrorDetail,
}

/// `?with_digest=true`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatusParams {
    #[serde(default)]
    with_digest: bool,
}

/// Applies statements atomically (forwarded to the leader).
#[utoipa::path(post, path = "/api/v1/execute", operation_id = "execute", tag = "native", request_body = ExecuteRequest, responses(
    (status = 200, description = "Applied", body = ExecuteResponse),
    (status = 400, description = "Malformed request or SQL error", body = Failure),
    (status = 409, description = "A constraint failed", body = Failure),
    (status = 413, description = "A limit was exceeded", body = Failure),
    (status = 503, description = "No leader, no quorum, overloaded or timed out: retry", body = Failure),
))]
pub async fn execute(call: Call, JsonBody(request): JsonBody<ExecuteRequest>) -> Response {
    let statements: Result<Vec<_>, _> = request.statements.into_iter().map(statement_of).collect();
    let statements = match statements {
        Ok(statements) => statements,
        Err(message) => return invalid(message),
    };
    let message = deeb_proto::ExecuteRequest { statements, idempotency_key: request.idempotency_key, restore: None };
    match call.api.execute(call.request(message)).await {
        Ok(response) => {
            let response = response.into_inner();
            json(&ExecuteResponse {
                results: response.results.into_iter().map(result_of).collect(),
                served_by: response.served_by,
                index: response.index,
            })
        }
        Err(status) => failed(&status),
    }
}

/// Runs one read-only statement; rows stream as they are read, one
/// `QueryChunk` per line.
#[utoipa::path(post, path = "/api/v1/query", operation_id = "query", tag = "native", request_body = QueryRequest, responses(
    (status = 200, description = "Newline-delimited JSON: one QueryChunk per line; a failure after \
        the first line ends the stream with a Failure line", body = QueryChunk, content_type = "application/x-ndjson"),
    (status = 400, description = "Malformed request, SQL error, or not read-only", body = Failure),
    (status = 413, description = "A limit was exceeded", body = Failure),
    (status = 503, description = "Not available at this consistency now, or timed out: retry", body = Failure),
))]
pub async fn query(call: Call, JsonBody(request): JsonBody<QueryRequest>) -> Response {
    let statement = match statement_of(request.statement) {
        Ok(statement) => statement,
        Err(message) => return invalid(message),
    };
    let consistency = match request.consistency {
        Consistency::Linearizable => deeb_proto::Consistency::Linearizable,
        Consistency::Lease => deeb_proto::Consistency::Lease,
        Consistency::Stale => deeb_proto::Consistency::Stale,
    };
    let message = deeb_proto::QueryRequest {
        statement: Some(statement),
        consistency: consistency as i32,
        max_staleness_ms: request.max_staleness_ms,
        timeout_ms: request.timeout_ms,
    };
    let mut chunks = match call.api.query(call.request(message)).await {
        Ok(response) => response.into_inner(),
        Err(status) => return failed(&status),
    };
    // The first chunk decides the status code: most failures (SQL, not
    // read-only, no leader) come before any row.
    let first = match chunks.next().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(status)) => return failed(&status),
        None => return failed(&tonic::Status::internal("the query ended without a result")),
    };
    let lines = tokio_stream::once(Ok(first)).chain(chunks).map(|chunk| {
        let mut line = match chunk {
            Ok(chunk) => serde_json::to_vec(&chunk_of(chunk)),
            Err(status) => serde_json::to_vec(&failure_of(&status)),
        }
        .unwrap_or_default();
        line.push(b'\n');
        Ok::<_, Infallible>(Bytes::from(line))
    });
    let mut response = Body::from_stream(lines).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    response
}

/// `GET /api/v1/watch`'s parameters: the `WatchRequest` fields.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WatchParams {
    /// The first log index to deliver; 0 (the default): changes after the
    /// node's applied index.
    #[serde(default)]
    from_index: u64,
    /// Comma-separated table names (case-insensitive); none: all tables.
    #[serde(default)]
    tables: Option<String>,
    /// Also fill `before` for updates and deletes.
    #[serde(default)]
    include_before_images: bool,
    /// `native` (the default: `Change` objects) or `debezium` (Debezium's
    /// JSON envelope, README: Change stream).
    #[serde(default)]
    #[param(pattern = "^(native|debezium)$")]
    format: Option<String>,
}

/// A column's value in a change.
#[derive(Debug, Serialize, ToSchema)]
pub struct ColumnValue {
    name: String,
    value: Option<SqlValue>,
}

/// One committed row change (the `Change` message): `kind` is `INSERT`,
/// `UPDATE`, `DELETE`, `DDL` (`sql` holds it) or `RESTORE` (`sql` holds
/// its id). An UPDATE's images hold its key and the columns it changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Change {
    index: u64,
    term: u64,
    timestamp_unix_ms: u64,
    request: u32,
    position: u32,
    last_in_request: bool,
    kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    table: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    key: Vec<ColumnValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    before: Vec<ColumnValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    after: Vec<ColumnValue>,
    #[serde(skip_serializing_if = "String::is_empty")]
    sql: String,
}

/// The change stream (the `query` permission): every committed row change
/// from `from_index` on, in log order, one `Change` per line, following
/// new writes until the client closes the connection. Served by any node
/// from its own log.
#[utoipa::path(get, path = "/api/v1/watch", operation_id = "watch", tag = "native", params(WatchParams), responses(
    (status = 200, description = "Newline-delimited JSON: one Change per line, without end, and an empty line \
        after half the idle timeout of quiet; an error (the log compacted past a slow reader, the node \
        stopping) ends it with a Failure line", body = Change,
        content_type = "application/x-ndjson"),
    (status = 400, description = "A malformed parameter", body = Failure),
    (status = 410, description = "`from_index` is below the log's first index (code ERROR_CODE_COMPACTED; \
        the message names the first index): take a backup and resume from its index", body = Failure),
    (status = 503, description = "Too many change streams on this node, or it does not answer: retry", body = Failure),
))]
pub async fn watch(
    call: Call,
    axum::Extension(KeepAlive(keep_alive)): axum::Extension<KeepAlive>,
    params: Result<Query<WatchParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let params = match params {
        Ok(Query(params)) => params,
        Err(rejection) => return invalid(format!("{rejection}: from_index=N, tables=a,b, include_before_images=true")),
    };
    let render: fn(deeb_proto::Change) -> Vec<u8> = match params.format.as_deref() {
        None | Some("native") => change_line,
        Some("debezium") => |change: deeb_proto::Change| super::debezium::line(&change),
        Some(other) => return invalid(format!("format={other:?}: native or debezium")),
    };
    let tables = params.tables.iter().flat_map(|tables| tables.split(',')).map(str::trim);
    let request = deeb_proto::WatchRequest {
        from_index: params.from_index,
        tables: tables.filter(|table| !table.is_empty()).map(str::to_owned).collect(),
        include_before_images: params.include_before_images,
    };
    let changes = match call.api.watch(call.request(request)).await {
        Ok(response) => response.into_inner(),
        Err(status) => return failed(&status),
    };
    // An empty line when nothing else went out for a while: the
    // connection shows it is alive (its idle timeout counts what it sends
    // too), and NDJSON readers skip empty lines.
    let (lines, body) = tokio::sync::mpsc::channel::<Bytes>(4);
    let mut changes = changes;
    tokio::spawn(async move {
        loop {
            let line = match tokio::time::timeout(keep_alive, changes.next()).await {
                Err(_) => Bytes::from_static(b"\n"),
                Ok(None) => return,
                Ok(Some(Ok(change))) => Bytes::from(render(change)),
                Ok(Some(Err(status))) => {
                    let mut line = serde_json::to_vec(&failure_of(&status)).unwrap_or_default();
                    line.push(b'\n');
                    Bytes::from(line)
                }
            };
            if lines.send(line).await.is_err() {
                return;
            }
        }
    });
    let body = tokio_stream::wrappers::ReceiverStream::new(body).map(Ok::<_, Infallible>);
    let mut response = Body::from_stream(body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    response
}

/// How long a change stream over HTTP stays silent before it sends an
/// empty line: half the connection's idle timeout.
#[derive(Clone, Copy, Debug)]
pub struct KeepAlive(pub std::time::Duration);

/// A change as one line of JSON (with its newline), as `GET
/// /api/v1/watch` and `deeb watch` print it.
pub fn change_line(change: deeb_proto::Change) -> Vec<u8> {
    let mut line = serde_json::to_vec(&change_of(change)).unwrap_or_default();
    line.push(b'\n');
    line
}

fn change_of(change: deeb_proto::Change) -> Change {
    let columns = |values: Vec<deeb_proto::NamedValue>| {
        values
            .into_iter()
            .map(|named| ColumnValue { name: named.name, value: named.value.and_then(json_value) })
            .collect()
    };
    let kind = change.kind().as_str_name().trim_start_matches("CHANGE_KIND_").to_owned();
    Change {
        index: change.index,
        term: change.term,
        timestamp_unix_ms: change.timestamp_unix_ms,
        request: change.request,
        position: change.position,
        last_in_request: change.last_in_request,
        kind,
        table: change.table,
        key: columns(change.key),
        before: columns(change.before),
        after: columns(change.after),
        sql: change.sql,
    }
}

/// This node's status (`?with_digest=true` adds the state digest: a full scan).
#[utoipa::path(get, path = "/api/v1/status", operation_id = "status", tag = "native", params(StatusParams), responses(
    (status = 200, description = "This node's view", body = StatusResponse),
    (status = 400, description = "A parameter other than with_digest=true|false", body = Failure),
    (status = 503, description = "The node does not answer", body = Failure),
))]
pub async fn status(
    call: Call,
    params: Result<Query<StatusParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(params)) = params else {
        return invalid("the only parameter is with_digest=true|false".into());
    };
    let request = deeb_proto::StatusRequest { with_digest: params.with_digest };
    match call.api.status(call.request(request)).await {
        Ok(response) => json(&status_of(response.into_inner())),
        Err(status) => failed(&status),
    }
}

/// One member's replication progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct Progress {
    node_id: u64,
    /// The peer address.
    address: String,
    learner: bool,
    /// The highest log index known replicated on the member: known on the
    /// leader only (`null` elsewhere).
    match_index: Option<u64>,
}

/// Raft's state on this node and, on the leader, each member's progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct RaftProgress {
    node_id: u64,
    role: String,
    term: u64,
    leader_id: u64,
    commit_index: u64,
    applied_index: u64,
    snapshot_index: u64,
    progress: Vec<Progress>,
}

/// Raft progress: the leader's view of each member's match index (ask the
/// leader: `GET /leader` names it), with this node's raft state.
#[utoipa::path(get, path = "/api/v1/raft/progress", operation_id = "raft_progress", tag = "native", responses(
    (status = 200, description = "This node's raft state and, on the leader, each member's progress", body = RaftProgress),
    (status = 503, description = "The node does not answer", body = Failure),
))]
pub async fn raft_progress(call: Call) -> Response {
    let status = match call.api.status(call.request(deeb_proto::StatusRequest::default())).await {
        Ok(response) => response.into_inner(),
        Err(status) => return failed(&status),
    };
    let leads = status.role == "leader";
    let progress = status.members.into_iter().map(|member| Progress {
        node_id: member.node_id,
        address: member.address,
        learner: member.learner,
        match_index: leads.then_some(member.matched),
    });
    json(&RaftProgress {
        node_id: status.node_id,
        role: status.role,
        term: status.term,
        leader_id: status.leader_id,
        commit_index: status.commit_index,
        applied_index: status.applied_index,
        snapshot_index: status.snapshot_index,
        progress: progress.collect(),
    })
}

/// Adds a node (as a voter, or a learner), or promotes a learner.
#[utoipa::path(post, path = "/api/v1/add-node", operation_id = "add_node", tag = "native", request_body = AddNodeRequest,
    responses(
        (status = 200, description = "Done", body = AdminResponse),
        (status = 400, description = "Malformed or refused", body = Failure),
        (status = 503, description = "No leader, or a change in progress: retry", body = Failure),
    ))]
pub async fn add_node(call: Call, JsonBody(request): JsonBody<AddNodeRequest>) -> Response {
    let message = deeb_proto::AddNodeRequest {
        node_id: request.node_id,
        address: request.address,
        learner: request.learner,
        promote: request.promote,
    };
    admin(call.api.add_node(call.request(message)).await)
}

/// Removes a node from the cluster.
#[utoipa::path(post, path = "/api/v1/remove-node", operation_id = "remove_node", tag = "native", request_body = RemoveNodeRequest,
    responses(
        (status = 200, description = "Done", body = AdminResponse),
        (status = 400, description = "Malformed or refused", body = Failure),
        (status = 503, description = "No leader, or a change in progress: retry", body = Failure),
    ))]
pub async fn remove_node(call: Call, JsonBody(request): JsonBody<RemoveNodeRequest>) -> Response {
    admin(call.api.remove_node(call.request(deeb_proto::RemoveNodeRequest { node_id: request.node_id })).await)
}

/// Hands leadership to another voter.
#[utoipa::path(post, path = "/api/v1/transfer-leader", operation_id = "transfer_leader", tag = "native", request_body = TransferLeaderRequest,
    responses(
        (status = 200, description = "Done", body = AdminResponse),
        (status = 400, description = "Malformed or refused", body = Failure),
        (status = 503, description = "No leader, or a change in progress: retry", body = Failure),
    ))]
pub async fn transfer_leader(call: Call, JsonBody(request): JsonBody<TransferLeaderRequest>) -> Response {
    let message = deeb_proto::TransferLeaderRequest { node_id: request.node_id };
    admin(call.api.transfer_leader(call.request(message)).await)
}

fn admin(answer: Result<tonic::Response<deeb_proto::AdminResponse>, tonic::Status>) -> Response {
    match answer {
        Ok(response) => json(&AdminResponse { served_by: response.into_inner().served_by }),
        Err(status) => failed(&status),
    }
}

/// A JSON request body, parsed; malformed, the 400 that says why.
pub struct JsonBody<T>(T);

impl<T: serde::de::DeserializeOwned> FromRequest<DeebService> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, api: &DeebService) -> Result<Self, Response> {
        let body = Bytes::from_request(request, api).await.map_err(IntoResponse::into_response)?;
        serde_json::from_slice(&body).map(JsonBody).map_err(|error| invalid(format!("invalid JSON body: {error}")))
    }
}

fn statement_of(statement: Statement) -> Result<deeb_proto::Statement, String> {
    let params = statement.params.into_iter().map(value_of).collect::<Result<_, _>>()?;
    let named_params = statement
        .named_params
        .into_iter()
        .map(|named| Ok(deeb_proto::NamedValue { name: named.name, value: Some(value_of(named.value)?) }))
        .collect::<Result<_, String>>()?;
    Ok(deeb_proto::Statement { sql: statement.sql, params, named_params })
}

fn value_of(value: Option<SqlValue>) -> Result<deeb_proto::Value, String> {
    let kind = match value {
        None => None,
        Some(SqlValue::Integer(integer)) => Some(Kind::Integer(integer)),
        Some(SqlValue::Real(real)) => Some(Kind::Real(real)),
        Some(SqlValue::Text(text)) => Some(Kind::Text(text)),
        Some(SqlValue::Blob(text)) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|error| format!("a blob must be base64: {error}"))?;
            Some(Kind::Blob(bytes))
        }
    };
    Ok(deeb_proto::Value { kind })
}

fn json_value(value: deeb_proto::Value) -> Option<SqlValue> {
    Some(match value.kind? {
        Kind::Integer(integer) => SqlValue::Integer(integer),
        Kind::Real(real) => SqlValue::Real(real),
        Kind::Text(text) => SqlValue::Text(text),
        Kind::Blob(bytes) => SqlValue::Blob(base64::engine::general_purpose::STANDARD.encode(bytes)),
    })
}

fn columns_of(columns: Vec<deeb_proto::Column>) -> Vec<Column> {
    columns.into_iter().map(|column| Column { name: column.name, declared_type: column.declared_type }).collect()
}

fn rows_of(rows: Vec<deeb_proto::Row>) -> Vec<Row> {
    rows.into_iter().map(|row| Row { values: row.values.into_iter().map(json_value).collect() }).collect()
}

fn result_of(result: deeb_proto::StatementResult) -> StatementResult {
    StatementResult {
        rows_affected: result.rows_affected,
        last_insert_id: result.last_insert_id,
        columns: columns_of(result.columns),
        rows: rows_of(result.rows),
    }
}

fn chunk_of(chunk: deeb_proto::QueryChunk) -> QueryChunk {
    QueryChunk { columns: columns_of(chunk.columns), rows: rows_of(chunk.rows), served_by: chunk.served_by }
}

fn status_of(status: deeb_proto::StatusResponse) -> StatusResponse {
    let members = status.members.into_iter().map(|member| MemberStatus {
        node_id: member.node_id,
        address: member.address,
        learner: member.learner,
        matched: member.matched,
        next_index: member.next_index,
        client_address: member.client_address,
        http_address: member.http_address,
    });
    StatusResponse {
        node_id: status.node_id,
        role: status.role,
        term: status.term,
        leader_id: status.leader_id,
        commit_index: status.commit_index,
        applied_index: status.applied_index,
        members: members.collect(),
        ms_since_leader_contact: status.ms_since_leader_contact,
        snapshot_index: status.snapshot_index,
        digest: status.digest,
        digest_index: status.digest_index,
    }
}

fn failure_of(status: &tonic::Status) -> Failure {
    let detail = deeb_client::detail_of(status).unwrap_or_default();
    let code = match status.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => ErrorCode::Permission,
        _ => detail.code(),
    };
    Failure {
        error: ErrorDetail {
            code: code.as_str_name().to_owned(),
            message: status.message().to_owned(),
            sqlite_code: detail.sqlite_code,
            statement_index: detail.statement_index,
            not_applied: detail.not_applied,
        },
    }
}

fn failed(status: &tonic::Status) -> Response {
    let code = StatusCode::from_u16(http_code(status)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (code, json(&failure_of(status))).into_response();
    if code == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"deeb\""));
    }
    response
}

fn invalid(message: String) -> Response {
    let failure = Failure {
        error: ErrorDetail {
            code: ErrorCode::InvalidRequest.as_str_name().to_owned(),
            message,
            sqlite_code: 0,
            statement_index: None,
            not_applied: true,
        },
    };
    (StatusCode::BAD_REQUEST, json(&failure)).into_response()
}

fn json<T: Serialize>(body: &T) -> Response {
    let text = serde_json::to_vec(body).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_and_write_as_the_oneof_arms() {
        let values: Vec<Option<SqlValue>> =
            serde_json::from_str(r#"[{"integer": -7}, {"real": 1.5}, {"text": "x"}, {"blob": "AAE="}, null]"#)
                .expect("parses");
        let proto: Vec<deeb_proto::Value> = values.into_iter().map(|v| value_of(v).expect("converts")).collect();
        assert_eq!(proto[3].kind, Some(Kind::Blob(vec![0, 1])));
        assert_eq!(proto[4].kind, None);
        let back: Vec<Option<SqlValue>> = proto.into_iter().map(json_value).collect();
        let text = serde_json::to_string(&back).expect("serializes");
        assert_eq!(text, r#"[{"integer":-7},{"real":1.5},{"text":"x"},{"blob":"AAE="},null]"#);
        for bad in [r#"[{"integer": "7"}]"#, r#"[{"int": 7}]"#, r#"[{"integer": 1, "real": 2}]"#, "[7]"] {
            assert!(serde_json::from_str::<Vec<Option<SqlValue>>>(bad).is_err(), "{bad}");
        }
        assert!(value_of(Some(SqlValue::Blob("not base64!".into()))).is_err());
    }

    #[test]
    fn requests_refuse_unknown_fields() {
        assert!(serde_json::from_str::<ExecuteRequest>(r#"{"statements": [{"sql": "SELECT 1"}]}"#).is_ok());
        assert!(serde_json::from_str::<ExecuteRequest>(r#"{"statement": [{"sql": "SELECT 1"}]}"#).is_err());
        let query: QueryRequest =
            serde_json::from_str(r#"{"statement": {"sql": "SELECT 1"}, "consistency": "CONSISTENCY_STALE"}"#)
                .expect("parses");
        assert!(matches!(query.consistency, Consistency::Stale));
        assert!(serde_json::from_str::<QueryRequest>(r#"{"statement": {"sql": "x"}, "consistency": "fast"}"#).is_err());
    }
}
