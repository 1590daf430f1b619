//! rqlite's HTTP API (`/db/execute`, `/db/query`, `/db/request`, `/status`,
//! `/readyz`, `/livez`), so that rqlite's clients work against deeb. Shapes
//! follow rqlite's documentation: one result per statement, zero fields
//! left out, database errors as HTTP 200 with a per-statement `error`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use deeb_proto::deeb_server::Deeb as _;
use deeb_proto::value::Kind;
use deeb_proto::{
    BackupFormat, BackupRequest, Consistency, ErrorCode, ExecuteRequest, NamedValue, QueryChunk, QueryRequest,
    Statement, StatusRequest, Value,
};
use serde_json::{json, Map, Value as Json};
use tokio_stream::StreamExt as _;
use utoipa::{IntoParams, ToSchema};

use super::Call;
use crate::api::DeebService;
use crate::security::Permission;

/// URL parameters, as given (`?pretty` is present with an empty value).
pub(super) type Params = HashMap<String, String>;

/// The three `/db/*` endpoints.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /db/execute`: writes, each statement on its own unless
    /// `?transaction` (then all or none).
    Execute,
    /// `GET|POST /db/query`: reads (`?q=` for GET), each at `?level`.
    Query,
    /// `POST /db/request`: reads and writes mixed, each run as what it is.
    Request,
}

/// A statement in a request body.
#[derive(serde::Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // The schema of what `parse_body` reads.
pub enum Statement_ {
    /// `"SQL"`.
    Sql(String),
    /// `["SQL", p1, p2, ...]` or `["SQL", {"name": v, ...}]`.
    WithParameters(Vec<serde_json::Value>),
}

/// rqlite's response body.
#[derive(ToSchema)]
#[allow(dead_code)] // The schema of what `respond` writes.
pub struct Response_ {
    /// One per statement, in order.
    results: Vec<Result_>,
    /// A failure of the whole request (no results).
    error: Option<String>,
    /// Seconds, with `?timings`.
    time: Option<f64>,
}

/// One statement's result: a write's counts (zero fields left out), a
/// read's rows (`types`/`rows` when `?associative`), or its error.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Result_ {
    last_insert_id: Option<i64>,
    rows_affected: Option<u64>,
    columns: Option<Vec<String>>,
    /// Declared types, lower case: a list, or by column when associative.
    types: Option<serde_json::Value>,
    values: Option<Vec<Vec<serde_json::Value>>>,
    rows: Option<Vec<serde_json::Value>>,
    error: Option<String>,
    time: Option<f64>,
}

/// rqlite's URL parameters for every `/db/*` endpoint (a flag is on
/// when present, with any value).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read from `Params`.
pub struct CommonParams {
    pretty: Option<String>,
    timings: Option<String>,
    /// On a follower: answer 301 with the leader's URL instead of
    /// forwarding (not for reads at `level=none`).
    redirect: Option<String>,
}

/// The write parameters.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct WriteParams {
    /// All statements or none.
    transaction: Option<String>,
    /// Add the log index the last write was applied at.
    raft_index: Option<String>,
}

/// The read parameters.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ReadParams_ {
    /// `none` (this node, bounded by `freshness`), `weak` (the leader's
    /// lease), `linearizable`, `strong`, `auto` (all linearizable).
    #[param(pattern = "^(none|weak|linearizable|strong|auto)?$")]
    level: Option<String>,
    /// With `level=none`: how stale the node may be, e.g. `1s`.
    freshness: Option<String>,
    /// How long each read may run, e.g. `500ms`.
    timeout: Option<String>,
    /// Rows as objects keyed by column.
    associative: Option<String>,
    /// Blobs as arrays of bytes rather than base64.
    blob_array: Option<String>,
}

/// Writes: each statement on its own, or all or none with `?transaction`.
#[utoipa::path(post, path = "/db/execute", operation_id = "db_execute", tag = "rqlite", params(CommonParams, WriteParams),
    request_body(content = Vec<Statement_>, description = "A JSON array of statements (or one as text/plain)"),
    responses(
        (status = 200, description = "Results; a failed statement has an `error`", body = Response_),
        (status = 301, description = "With `redirect` on a follower: the leader's URL in `Location`"),
        (status = 400, description = "Malformed body or parameter", body = String, content_type = "text/plain"),
        (status = 413, description = "Body over the limit"),
        (status = 503, description = "No leader or no quorum, or timed out: retry", body = String, content_type = "text/plain"),
    ))]
pub async fn execute(call: Call, uri: Uri, Query(params): Query<Params>, body: Bytes) -> Response {
    serve(Endpoint::Execute, call, (&uri, params), &body).await
}

/// Reads: the statement in `?q=` (`POST` for several, in a body); a write
/// is refused.
#[utoipa::path(get, path = "/db/query", operation_id = "db_query", tag = "rqlite",
    params(CommonParams, ReadParams_, ("q" = String, Query, min_length = 1, description = "The statement")),
    responses(
        (status = 200, description = "Rows; a failed statement has an `error`", body = Response_),
        (status = 301, description = "With `redirect` on a follower: the leader's URL in `Location`"),
        (status = 400, description = "Malformed body or parameter", body = String, content_type = "text/plain"),
        (status = 413, description = "Body over the limit"),
        (status = 503, description = "Not available at this level now, or timed out: retry", body = String, content_type = "text/plain"),
    ))]
pub async fn query(call: Call, uri: Uri, Query(params): Query<Params>, body: Bytes) -> Response {
    serve(Endpoint::Query, call, (&uri, params), &body).await
}

/// Reads, as `GET /db/query` (`POST` for statements in a body).
#[utoipa::path(post, path = "/db/query", operation_id = "db_query_post", tag = "rqlite",
    params(CommonParams, ReadParams_),
    request_body(content = Vec<Statement_>, description = "A JSON array of statements"),
    responses(
        (status = 200, description = "Rows; a failed statement has an `error`", body = Response_),
        (status = 301, description = "With `redirect` on a follower: the leader's URL in `Location`"),
        (status = 400, description = "Malformed body or parameter", body = String, content_type = "text/plain"),
        (status = 413, description = "Body over the limit"),
        (status = 503, description = "Not available at this level now, or timed out: retry", body = String, content_type = "text/plain"),
    ))]
pub async fn query_post(call: Call, uri: Uri, Query(params): Query<Params>, body: Bytes) -> Response {
    serve(Endpoint::Query, call, (&uri, params), &body).await
}

/// Reads and writes mixed, each run as what it is.
#[utoipa::path(post, path = "/db/request", operation_id = "db_request", tag = "rqlite",
    params(CommonParams, WriteParams, ReadParams_),
    request_body(content = Vec<Statement_>, description = "A JSON array of statements"),
    responses(
        (status = 200, description = "Results; a failed statement has an `error`", body = Response_),
        (status = 301, description = "With `redirect` on a follower: the leader's URL in `Location`"),
        (status = 400, description = "Malformed body or parameter", body = String, content_type = "text/plain"),
        (status = 413, description = "Body over the limit"),
        (status = 503, description = "No leader or no quorum, or timed out: retry", body = String, content_type = "text/plain"),
    ))]
pub async fn request(call: Call, uri: Uri, Query(params): Query<Params>, body: Bytes) -> Response {
    serve(Endpoint::Request, call, (&uri, params), &body).await
}

async fn serve(endpoint: Endpoint, call: Call, (uri, params): (&Uri, Params), body: &[u8]) -> Response {
    let started = Instant::now();
    let statements = match (endpoint, params.get("q")) {
        (Endpoint::Query, Some(sql)) if sql.trim().is_empty() => Err("empty query".to_owned()),
        (Endpoint::Query, Some(_)) if !body.is_empty() => {
            Err("give the statement as ?q= or in the body, not both".into())
        }
        (Endpoint::Query, Some(sql)) => Ok(vec![plain(sql)]),
        _ => parse_body(&call.headers, body),
    };
    let statements = match statements {
        Ok(statements) => statements,
        Err(message) => return bad_request(message),
    };
    let read = match ReadParams::parse(&params) {
        Ok(read) => read,
        Err(message) if endpoint != Endpoint::Execute => return bad_request(message),
        Err(_) => ReadParams::default(),
    };
    // rqlite's `redirect`: the leader's address instead of forwarding (a
    // read at `none` is served here, with or without a leader).
    let stale_read = endpoint == Endpoint::Query && read.consistency == Consistency::Stale;
    if params.contains_key("redirect") && !stale_read {
        let permission = if endpoint == Endpoint::Query { Permission::Query } else { Permission::Execute };
        match call.leader_location(permission, uri).await {
            Ok(None) => {}
            Ok(Some(location)) => return redirect(&location),
            Err(failure) => return failure.into_response(),
        }
    }
    let outcome = match endpoint {
        Endpoint::Execute => call.writes(statements, params.contains_key("transaction")).await,
        Endpoint::Query => call.reads(statements, &read).await,
        Endpoint::Request => call.mixed(statements, &read).await,
    };
    match outcome {
        Ok((results, served)) => respond(&params, results, started, served),
        Err(failure) => failure.into_response(),
    }
}

/// The members as this node knows them, in rqlite's shape (`?ver=2`: a
/// list), voters only unless `?nonvoters`. `reachable`: heard over the
/// peer link in the last few seconds (the leader hears every member; a
/// follower only the leader).
#[utoipa::path(get, path = "/nodes", operation_id = "nodes", tag = "rqlite", params(
        ("ver" = Option<String>, Query, description = "2: a list under `nodes` instead of a map by id"),
        ("nonvoters" = Option<String>, Query, description = "Include learners"),
    ),
    responses((status = 200, description = "By node id: `api_addr`, `addr`, `voter`, `reachable`, `leader`",
        body = serde_json::Value)))]
pub async fn nodes(call: Call, Query(params): Query<Params>) -> Response {
    let api = &call.api;
    let status = match call.status().await {
        Ok(status) => status,
        Err(failure) => return failure.into_response(),
    };
    let nonvoters = params.contains_key("nonvoters");
    let nodes = status.members.iter().filter(|member| nonvoters || !member.learner).map(|member| {
        let node = json!({
            "id": member.node_id.to_string(),
            "api_addr": api_address(api, &member.http_address),
            "addr": member.address,
            "voter": !member.learner,
            "reachable": api.heard_within(member.node_id, REACHABLE_WITHIN),
            "leader": member.node_id == status.leader_id,
        });
        (member.node_id.to_string(), node)
    });
    let body = if params.get("ver").is_some_and(|ver| ver == "2") {
        json!({ "nodes": nodes.map(|(_, node)| node).collect::<Vec<_>>() })
    } else {
        Json::Object(nodes.collect())
    };
    json_response(StatusCode::OK, &params, &body, status.node_id)
}

/// The leader: its id, peer address and HTTP API address; 503 if none is
/// known.
#[utoipa::path(get, path = "/leader", operation_id = "leader", tag = "rqlite", responses(
    (status = 200, description = "`{\"leader\": {\"id\", \"addr\", \"api_addr\"}}`", body = serde_json::Value),
    (status = 503, description = "No leader known", body = String, content_type = "text/plain"),
))]
pub async fn leader(call: Call, Query(params): Query<Params>) -> Response {
    let api = &call.api;
    let status = match call.status().await {
        Ok(status) => status,
        Err(failure) => return failure.into_response(),
    };
    let Some(leader) = status.members.iter().find(|member| member.node_id == status.leader_id) else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "leader not found".into());
    };
    let body = json!({ "leader": {
        "id": leader.node_id.to_string(),
        "addr": leader.address,
        "api_addr": api_address(api, &leader.http_address),
    }});
    json_response(StatusCode::OK, &params, &body, status.node_id)
}

/// `GET /db/backup` (the `backup` permission): a consistent copy of the
/// whole database as a SQLite file (`fmt=sql`: as SQL text, like sqlite3's
/// `.dump`, without deeb's `_deeb_*` tables), taken on this node while writes go on,
/// streamed (`Content-Length` set, so a broken transfer shows), with its
/// applied index and CRC32C in headers. `?level=none`: this node's state
/// as it is; otherwise every write acknowledged before the request.
/// `?compress`: gzip-compressed as it streams (no `Content-Length`: a
/// broken transfer shows as a gzip stream cut short).
#[utoipa::path(get, path = "/db/backup", operation_id = "db_backup", tag = "rqlite",
    params(("level" = Option<String>, Query, pattern = "^(none|weak|linearizable|strong|auto)?$",
        description = "`none`: this node as it is; otherwise linearizable"),
        ("fmt" = Option<String>, Query, pattern = "^(binary|sql)?$",
        description = "`sql`: SQL text (schema and INSERTs); otherwise the SQLite file"),
        ("compress" = Option<String>, Query, pattern = "^(true|false)?$",
        description = "present (or `true`): gzip-compressed, without `Content-Length`")),
    responses(
        (status = 200, description = "The SQLite file, or the SQL text with `fmt=sql`; `X-DEEB-APPLIED-INDEX` and \
            `X-DEEB-CRC32C` say what it holds (uncompressed)", content(("application/octet-stream"),
            (String = "text/plain"), ("application/gzip"))),
        (status = 400, description = "An unknown `fmt`, `level` or `compress` value", body = String,
            content_type = "text/plain"),
        (status = 503, description = "No quorum for the read barrier, or backups already running: retry", body = String,
            content_type = "text/plain"),
    ))]
pub async fn backup(call: Call, Query(params): Query<Params>) -> Response {
    let format = match params.get("fmt").map(String::as_str) {
        None | Some("" | "binary") => BackupFormat::Sqlite,
        Some("sql") => BackupFormat::Sql,
        Some(other) => return bad_request(format!("unknown fmt {other:?}: binary (the SQLite file) or sql")),
    };
    let compress = match params.get("compress").map(String::as_str) {
        None | Some("false") => false,
        Some("" | "true") => true,
        Some(other) => return bad_request(format!("compress={other:?}: true, false, or no value")),
    };
    let consistency = match params.get("level").map(String::as_str) {
        Some("none") => Consistency::Stale,
        None | Some("" | "weak" | "linearizable" | "strong" | "auto") => Consistency::Linearizable,
        Some(other) => return bad_request(format!("unknown level {other:?}")),
    };
    let request = call.request(BackupRequest { consistency: consistency as i32, format: format as i32 });
    let mut chunks = match call.api.backup(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Failure::of(&status).into_response(),
    };
    let first = match chunks.next().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(status)) => return Failure::of(&status).into_response(),
        None => return text(StatusCode::INTERNAL_SERVER_ERROR, "the backup ended before it began".into()),
    };
    let Some(header) = first.header else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "the backup began without its header".into());
    };
    let bytes = tokio_stream::once(Ok(first)).chain(chunks).map(|chunk| match chunk {
        Ok(chunk) => Ok(Bytes::from(chunk.data)),
        // Cut the body short: the client sees fewer bytes than announced.
        Err(status) => Err(std::io::Error::other(status.message().to_owned())),
    });
    let mut response = match compress {
        true => axum::body::Body::from_stream(gzipped(bytes)).into_response(),
        false => axum::body::Body::from_stream(bytes).into_response(),
    };
    let headers = response.headers_mut();
    let content_type = match (compress, format) {
        (true, _) => "application/gzip",
        (false, BackupFormat::Sqlite) => "application/octet-stream",
        (false, BackupFormat::Sql) => "text/plain; charset=utf-8",
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Compressed, the length is known only at the end.
    if !compress {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(header.total_bytes));
    }
    headers.insert("x-deeb-applied-index", HeaderValue::from(header.applied_index));
    if let Ok(crc) = HeaderValue::from_str(&format!("{:08x}", header.crc32c)) {
        headers.insert("x-deeb-crc32c", crc);
    }
    headers.insert("x-deeb-served-by", HeaderValue::from(header.served_by));
    response
}

/// `bytes` gzip-compressed as they pass, a chunk at a time (a broken
/// source ends the stream broken, as it came).
fn gzipped(
    mut bytes: impl tokio_stream::Stream<Item = std::io::Result<Bytes>> + Send + Unpin + 'static,
) -> impl tokio_stream::Stream<Item = std::io::Result<Bytes>> {
    use std::io::Write as _;
    let (compressed, stream) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        while let Some(chunk) = bytes.next().await {
            let out = chunk.and_then(|chunk| {
                tokio::task::block_in_place(|| encoder.write_all(&chunk))?;
                Ok(Bytes::from(std::mem::take(encoder.get_mut())))
            });
            let failed = out.is_err();
            if compressed.send(out).await.is_err() || failed {
                return;
            }
        }
        let _ = compressed.send(encoder.finish().map(Bytes::from)).await;
    });
    tokio_stream::wrappers::ReceiverStream::new(stream)
}

/// `GET /metrics` (the `status` permission): Prometheus' text format.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "health", responses(
    (status = 200, description = "OpenMetrics text", body = String,
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
))]
pub async fn metrics(call: Call) -> Response {
    let api = &call.api;
    match api.metrics_text(&call.request(())).await {
        Ok(text) => {
            let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], text).into_response()
        }
        Err(status) => Failure::of(&status).into_response(),
    }
}

/// How long ago a member may last have been heard and count as reachable.
const REACHABLE_WITHIN: Duration = Duration::from_secs(5);

/// A member's HTTP API as a URL, as rqlite writes `api_addr` (empty if
/// not heard yet or it has none).
fn api_address(api: &DeebService, http_address: &str) -> String {
    if http_address.is_empty() {
        return String::new();
    }
    format!("{}://{http_address}", api.http_scheme())
}

fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, value)]).into_response(),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "the leader's address is not a valid URL".into()),
    }
}

/// This node as rqlite's `/status` shapes it, where it applies.
#[utoipa::path(get, path = "/status", operation_id = "rqlite_status", tag = "rqlite", responses(
    (status = 200, description = "`store` (node, leader, raft state, nodes), `node`, `build`", body = serde_json::Value),
))]
pub async fn status(call: Call, Query(params): Query<Params>) -> Response {
    let api = &call.api;
    let status = match call.status().await {
        Ok(status) => status,
        Err(failure) => return failure.into_response(),
    };
    let state = match status.role.as_str() {
        "leader" => "Leader",
        "follower" => "Follower",
        _ => "Candidate",
    };
    let body = json!({
        "store": {
            "node_id": status.node_id.to_string(),
            "ready": status.leader_id != 0,
            "leader": { "node_id": status.leader_id.to_string() },
            "raft": {
                "state": state,
                "term": status.term,
                "commit_index": status.commit_index,
                "applied_index": status.applied_index,
                "snapshot_index": status.snapshot_index,
            },
            "nodes": status.members.iter().map(|member| json!({
                "id": member.node_id.to_string(),
                "addr": member.address,
                "client_addr": member.client_address,
                "api_addr": api_address(api, &member.http_address),
                "voter": !member.learner,
            })).collect::<Vec<_>>(),
        },
        "node": { "id": status.node_id },
        "build": { "version": env!("CARGO_PKG_VERSION") },
    });
    json_response(StatusCode::OK, &params, &body, status.node_id)
}

/// `GET /readyz` (the `ready` permission): 200 with a known leader, this
/// node in the cluster's configuration (not removed, not still joining),
/// caught up to within `READY_LAG_MAX` entries of what it knows committed
/// and its database answering a local read; 503 otherwise; `?noleader` checks only that the node answers.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "health", params(("noleader" = Option<String>, Query,
        description = "Only check that the node answers")),
    responses(
        (status = 200, description = "`[+]` lines, one per check", body = String, content_type = "text/plain"),
        (status = 503, description = "A `[-]` line says which check failed", body = String, content_type = "text/plain"),
    ))]
pub async fn readyz(call: Call, Query(params): Query<Params>) -> Response {
    let api = &call.api;
    let status = api.ready_status(&call.request(())).await.map_err(|status| Failure::of(&status));
    let status = match status {
        Ok(status) => status,
        Err(Failure::Unavailable(message)) => {
            return text(StatusCode::SERVICE_UNAVAILABLE, format!("[-]node not ok: {message}"));
        }
        Err(failure) => return failure.into_response(),
    };
    // `?verbose` is accepted: every answer lists its checks.
    if params.contains_key("noleader") {
        return text(StatusCode::OK, "[+]node ok".into());
    }
    if status.leader_id == 0 {
        return text(StatusCode::SERVICE_UNAVAILABLE, "[+]node ok\n[-]leader does not exist".into());
    }
    if !status.members.iter().any(|member| member.node_id == status.node_id) {
        let line = "[+]node ok\n[+]leader ok\n[-]not a member of the cluster (removed, or not yet joined)";
        return text(StatusCode::SERVICE_UNAVAILABLE, line.into());
    }
    let lag = status.commit_index.saturating_sub(status.applied_index);
    if lag > READY_LAG_MAX {
        let line = format!("[+]node ok\n[+]leader ok\n[-]store not ready: {lag} entries behind");
        return text(StatusCode::SERVICE_UNAVAILABLE, line);
    }
    // The database answers a local read (a MySQL sidecar may be down).
    if let Err(message) = api.local_status().await {
        let line = format!("[+]node ok\n[+]leader ok\n[-]store not ready: {message}");
        return text(StatusCode::SERVICE_UNAVAILABLE, line);
    }
    text(StatusCode::OK, "[+]node ok\n[+]leader ok\n[+]store ok".into())
}

/// `GET /livez`: 200 while the node's event loop answers and a local
/// `SELECT 1` runs; never needs a quorum, so a liveness probe does not
/// restart a node cut off from it.
#[utoipa::path(get, path = "/livez", operation_id = "livez", tag = "health", responses(
    (status = 200, description = "`[+]node ok`", body = String, content_type = "text/plain"),
    (status = 503, description = "`[-]node not ok: ` and why", body = String, content_type = "text/plain"),
))]
pub async fn livez(State(api): State<DeebService>) -> Response {
    match api.local_status().await {
        Ok(()) => text(StatusCode::OK, "[+]node ok".into()),
        Err(message) => text(StatusCode::SERVICE_UNAVAILABLE, format!("[-]node not ok: {message}")),
    }
}

/// Entries a ready node may be behind its known commit index.
const READY_LAG_MAX: u64 = 1000;

/// Why a call gave no result.
pub(super) enum Failure {
    /// The statement failed (SQL, constraint, limit): a per-statement
    /// `error`, HTTP 200.
    Statement(String),
    /// A read refused as not read-only.
    Refused(String),
    /// No leader, no quorum, a timeout, overload: 503.
    Unavailable(String),
    Unauthenticated(String),
    Forbidden(String),
    Internal(String),
}

impl Failure {
    pub(super) fn of(status: &tonic::Status) -> Failure {
        // deeb names the failing statement's place in its request; each
        // rqlite result stands in that place already.
        let detail = deeb_client::detail_of(status);
        let at = detail.as_ref().and_then(|detail| detail.statement_index).map(|at| format!("statement {at}: "));
        let message = status.message();
        let message = at.and_then(|at| message.strip_prefix(&at)).unwrap_or(message).to_owned();
        match status.code() {
            tonic::Code::Unauthenticated => return Failure::Unauthenticated(message),
            tonic::Code::PermissionDenied => return Failure::Forbidden(message),
            _ => {}
        }
        let code = detail.map_or(ErrorCode::Unspecified, |detail| detail.code());
        match code {
            ErrorCode::Sql | ErrorCode::Constraint | ErrorCode::Limit | ErrorCode::InvalidRequest => {
                Failure::Statement(message)
            }
            ErrorCode::Refused | ErrorCode::Compacted => Failure::Refused(message),
            ErrorCode::Timeout
            | ErrorCode::Unavailable
            | ErrorCode::OutcomeUnknown
            | ErrorCode::Overloaded
            | ErrorCode::Consistency => Failure::Unavailable(message),
            ErrorCode::Permission => Failure::Forbidden(message),
            ErrorCode::Internal | ErrorCode::Unspecified => match status.code() {
                tonic::Code::ResourceExhausted | tonic::Code::Unavailable => Failure::Unavailable(message),
                _ => Failure::Internal(message),
            },
        }
    }

    pub(super) fn into_response(self) -> Response {
        match self {
            Failure::Statement(message) | Failure::Refused(message) => {
                json_response(StatusCode::OK, &Params::new(), &json!({ "results": [], "error": message }), 0)
            }
            Failure::Unavailable(message) => text(StatusCode::SERVICE_UNAVAILABLE, message),
            Failure::Unauthenticated(message) => {
                let mut response = text(StatusCode::UNAUTHORIZED, message);
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"deeb\""));
                response
            }
            Failure::Forbidden(message) => text(StatusCode::FORBIDDEN, message),
            Failure::Internal(message) => text(StatusCode::INTERNAL_SERVER_ERROR, message),
        }
    }
}

impl Call {
    /// With `?redirect`: where the leader serves this request, or `None`
    /// if this node leads.
    async fn leader_location(&self, permission: Permission, uri: &Uri) -> Result<Option<String>, Failure> {
        let request = self.request(());
        let status = self.api.cluster_view(&request, permission).await.map_err(|status| Failure::of(&status))?;
        if status.leader_id == status.node_id {
            return Ok(None);
        }
        let leader = status.members.iter().find(|member| member.node_id == status.leader_id);
        let Some(leader) = leader else { return Err(Failure::Unavailable("leader not found".into())) };
        if leader.http_address.is_empty() {
            return Err(Failure::Unavailable(format!("the HTTP address of leader {} is not known", leader.node_id)));
        }
        let path = uri.path_and_query().map_or("/", |path| path.as_str());
        Ok(Some(format!("{}{path}", api_address(&self.api, &leader.http_address))))
    }

    async fn status(&self) -> Result<deeb_proto::StatusResponse, Failure> {
        let answer = self.api.status(self.request(StatusRequest::default())).await;
        answer.map(tonic::Response::into_inner).map_err(|status| Failure::of(&status))
    }

    /// Runs `statements` as writes: all in one request under `transaction`
    /// (nothing applied if one fails: those before it report `{}`); else
    /// each on its own as rqlite does, in as few requests as errors allow.
    async fn writes(&self, statements: Vec<Statement>, transaction: bool) -> Result<(Vec<Json>, Served), Failure> {
        let mut results = Vec::with_capacity(statements.len());
        let mut served = Served::default();
        let (mut next, mut end) = (0, statements.len());
        while next < statements.len() {
            let batch = ExecuteRequest {
                statements: statements[next..end].to_vec(),
                idempotency_key: String::new(),
                restore: None,
            };
            match self.api.execute(self.request(batch)).await {
                Ok(response) => {
                    let response = response.into_inner();
                    served = Served { node: response.served_by, index: response.index };
                    results.extend(response.results.iter().map(execute_result));
                    (next, end) = (end, statements.len());
                }
                Err(status) => {
                    let failure = Failure::of(&status);
                    let (Failure::Statement(message) | Failure::Refused(message)) = failure else {
                        return Err(failure);
                    };
                    let at = deeb_client::detail_of(&status).and_then(|detail| detail.statement_index);
                    let at = at.map_or(0, |at| at as usize).min(end - next - 1);
                    if transaction {
                        results.extend((0..at).map(|_| json!({})));
                        results.push(json!({ "error": message }));
                        return Ok((results, served));
                    }
                    if at == 0 {
                        results.push(json!({ "error": message }));
                        (next, end) = (next + 1, statements.len());
                    } else {
                        // The ones before the failing statement, on their own.
                        end = next + at;
                    }
                }
            }
        }
        Ok((results, served))
    }

    /// Each statement read on its own; a failed one reports its error.
    async fn reads(&self, statements: Vec<Statement>, read: &ReadParams) -> Result<(Vec<Json>, Served), Failure> {
        let (mut results, mut served) = (Vec::with_capacity(statements.len()), Served::default());
        for statement in statements {
            match self.read(statement, read).await {
                Ok((result, node)) => (served.node, _) = (node, results.push(result)),
                // A write sent to /db/query is refused like any failed statement.
                Err(Failure::Statement(message) | Failure::Refused(message)) => {
                    results.push(json!({ "error": message }));
                }
                Err(failure) => return Err(failure),
            }
        }
        Ok((results, served))
    }

    /// Each statement run as what it is: a read, a write, or (a `WITH`)
    /// a read unless refused as not read-only, then a write.
    async fn mixed(&self, statements: Vec<Statement>, read: &ReadParams) -> Result<(Vec<Json>, Served), Failure> {
        let (mut results, mut served) = (Vec::with_capacity(statements.len()), Served::default());
        for statement in statements {
            let kind = kind_of(&statement.sql);
            if kind != Kind_::Write {
                match self.read(statement.clone(), read).await {
                    Ok((result, node)) => {
                        (served.node, _) = (node, results.push(result));
                        continue;
                    }
                    Err(Failure::Refused(_)) if kind == Kind_::Either => {}
                    Err(Failure::Statement(message) | Failure::Refused(message)) => {
                        results.push(json!({ "error": message }));
                        continue;
                    }
                    Err(failure) => return Err(failure),
                }
            }
            let (mut written, wrote) = self.writes(vec![statement], false).await?;
            served = Served { node: wrote.node, index: wrote.index.max(served.index) };
            results.append(&mut written);
        }
        Ok((results, served))
    }

    /// One read, whole (the rqlite API has no streaming).
    async fn read(&self, statement: Statement, read: &ReadParams) -> Result<(Json, u64), Failure> {
        let request = QueryRequest {
            statement: Some(statement),
            consistency: read.consistency as i32,
            max_staleness_ms: read.max_staleness_ms,
            timeout_ms: read.timeout_ms,
        };
        let response = self.api.query(self.request(request)).await.map_err(|status| Failure::of(&status))?;
        let mut stream = response.into_inner();
        let mut result = ReadResult::default();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|status| Failure::of(&status))?;
            result.add(chunk, read)?;
        }
        let served_by = result.served_by;
        Ok((result.into_json(read), served_by))
    }
}

/// How reads run: rqlite's `level`, `freshness`, `timeout`; how results
/// look: `associative`, `blob_array`.
#[derive(Default)]
struct ReadParams {
    consistency: Consistency,
    max_staleness_ms: u64,
    timeout_ms: u64,
    associative: bool,
    blob_array: bool,
}

impl ReadParams {
    fn parse(params: &Params) -> Result<ReadParams, String> {
        // rqlite's levels onto deeb's: none reads this node as is (bounded
        // by `freshness` if given), weak is the leader's lease, and
        // linearizable, strong and auto are linearizable.
        let consistency = match params.get("level").map(String::as_str) {
            None | Some("" | "linearizable" | "strong" | "auto") => Consistency::Linearizable,
            Some("weak") => Consistency::Lease,
            Some("none") => Consistency::Stale,
            Some(other) => return Err(format!("unknown level {other:?}: none, weak, linearizable, strong or auto")),
        };
        let duration = |name: &str| -> Result<u64, String> {
            params.get(name).filter(|text| !text.is_empty()).map_or(Ok(0), |text| {
                parse_go_duration(text)
                    .map(|duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1))
                    .ok_or_else(|| format!("bad {name} {text:?}: expected e.g. 500ms, 2s, 1m"))
            })
        };
        Ok(ReadParams {
            consistency,
            max_staleness_ms: duration("freshness")?,
            timeout_ms: duration("timeout")?,
            associative: params.contains_key("associative"),
            blob_array: params.contains_key("blob_array"),
        })
    }
}

/// A read's rows, gathered from its chunks.
#[derive(Default)]
struct ReadResult {
    columns: Vec<String>,
    types: Vec<String>,
    values: Vec<Vec<Json>>,
    bytes: usize,
    served_by: u64,
}

impl ReadResult {
    fn add(&mut self, chunk: QueryChunk, read: &ReadParams) -> Result<(), Failure> {
        use prost::Message as _;
        if self.columns.is_empty() && !chunk.columns.is_empty() {
            self.columns = chunk.columns.iter().map(|column| column.name.clone()).collect();
            self.types = chunk.columns.iter().map(|column| column.declared_type.to_lowercase()).collect();
        }
        self.served_by = chunk.served_by;
        self.bytes += chunk.encoded_len();
        if self.bytes > RESULT_BYTES_MAX {
            return Err(Failure::Statement(format!(
                "the result is over {} MiB: the rqlite API returns results whole; page with LIMIT",
                RESULT_BYTES_MAX >> 20
            )));
        }
        for row in chunk.rows {
            if self.values.is_empty() {
                // rqlite names the type of an expression by its first value.
                for (slot, value) in self.types.iter_mut().zip(&row.values) {
                    if slot.is_empty() {
                        *slot = type_of(value).to_owned();
                    }
                }
            }
            self.values.push(row.values.iter().map(|value| json_of(value, read.blob_array)).collect());
        }
        Ok(())
    }

    fn into_json(self, read: &ReadParams) -> Json {
        if read.associative {
            let types: Map<String, Json> =
                self.columns.iter().cloned().zip(self.types.iter().map(|t| Json::from(t.clone()))).collect();
            let rows: Vec<Json> = self
                .values
                .into_iter()
                .map(|row| Json::Object(self.columns.iter().cloned().zip(row).collect()))
                .collect();
            return json!({ "types": types, "rows": rows });
        }
        let mut result = json!({ "columns": self.columns, "types": self.types });
        if !self.values.is_empty() {
            result["values"] = Json::from(self.values);
        }
        result
    }
}

/// The largest result the rqlite API gathers before answering.
const RESULT_BYTES_MAX: usize = 64 << 20;

/// A write's result, zero fields left out as rqlite does (with rows for a
/// statement with RETURNING).
fn execute_result(result: &deeb_proto::StatementResult) -> Json {
    let mut object = Map::new();
    if result.last_insert_id != 0 {
        object.insert("last_insert_id".into(), result.last_insert_id.into());
    }
    if result.rows_affected != 0 {
        object.insert("rows_affected".into(), result.rows_affected.into());
    }
    if !result.columns.is_empty() {
        let names: Vec<&str> = result.columns.iter().map(|column| column.name.as_str()).collect();
        let types: Vec<String> = result.columns.iter().map(|column| column.declared_type.to_lowercase()).collect();
        object.insert("columns".into(), json!(names));
        object.insert("types".into(), json!(types));
        let rows: Vec<Vec<Json>> =
            result.rows.iter().map(|row| row.values.iter().map(|value| json_of(value, false)).collect()).collect();
        if !rows.is_empty() {
            object.insert("values".into(), json!(rows));
        }
    }
    Json::Object(object)
}

fn type_of(value: &Value) -> &'static str {
    match value.kind {
        Some(Kind::Integer(_)) => "integer",
        Some(Kind::Real(_)) => "real",
        Some(Kind::Text(_)) => "text",
        Some(Kind::Blob(_)) => "blob",
        None => "",
    }
}

fn json_of(value: &Value, blob_array: bool) -> Json {
    match &value.kind {
        None => Json::Null,
        Some(Kind::Integer(integer)) => Json::from(*integer),
        Some(Kind::Real(real)) => serde_json::Number::from_f64(*real).map_or(Json::Null, Json::Number),
        Some(Kind::Text(text)) => Json::from(text.clone()),
        Some(Kind::Blob(bytes)) if blob_array => Json::from(bytes.clone()),
        Some(Kind::Blob(bytes)) => Json::from(base64::engine::general_purpose::STANDARD.encode(bytes)),
    }
}

/// The statements of a request body: a JSON array of `"SQL"`,
/// `["SQL", p1, ...]` or `["SQL", {"name": v}]`, or one statement as
/// `text/plain`.
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Statement>, String> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
    if content_type.starts_with("text/plain") {
        let sql = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_owned())?;
        if sql.trim().is_empty() {
            return Err("no statements".into());
        }
        return Ok(vec![plain(sql)]);
    }
    let items: Vec<Json> = serde_json::from_slice(body).map_err(|error| format!("invalid JSON body: {error}"))?;
    if items.is_empty() {
        return Err("no statements".into());
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| statement_of(item).map_err(|e| format!("statement {index}: {e}")))
        .collect()
}

fn statement_of(item: &Json) -> Result<Statement, String> {
    match item {
        Json::String(sql) => Ok(plain(sql)),
        Json::Array(parts) => {
            let Some(Json::String(sql)) = parts.first() else {
                return Err("expected [\"SQL\", parameters...]".into());
            };
            let mut statement = plain(sql);
            match parts.get(1) {
                Some(Json::Object(named)) if parts.len() == 2 => {
                    for (name, value) in named {
                        let value = param_of(value).map_err(|e| format!("parameter {name:?}: {e}"))?;
                        // rqlite's names come without SQLite's prefix.
                        let name = if name.starts_with([':', '@', '$']) { name.clone() } else { format!(":{name}") };
                        statement.named_params.push(NamedValue { name, value: Some(value) });
                    }
                }
                _ => {
                    for (index, value) in parts.iter().enumerate().skip(1) {
                        statement.params.push(param_of(value).map_err(|e| format!("parameter {index}: {e}"))?);
                    }
                }
            }
            Ok(statement)
        }
        _ => Err("expected \"SQL\" or [\"SQL\", parameters...]".into()),
    }
}

fn param_of(value: &Json) -> Result<Value, String> {
    let kind = match value {
        Json::Null => None,
        Json::Bool(flag) => Some(Kind::Integer(i64::from(*flag))),
        Json::Number(number) => match (number.as_i64(), number.as_f64()) {
            (Some(integer), _) => Some(Kind::Integer(integer)),
            (None, Some(real)) => Some(Kind::Real(real)),
            (None, None) => return Err(format!("{number} does not fit a 64-bit number")),
        },
        Json::String(text) => Some(Kind::Text(text.clone())),
        // rqlite: an array of byte values is a blob.
        Json::Array(items) => {
            let bytes: Option<Vec<u8>> =
                items.iter().map(|item| item.as_u64().and_then(|byte| u8::try_from(byte).ok())).collect();
            Some(Kind::Blob(bytes.ok_or("an array parameter must hold byte values 0-255 (a blob)")?))
        }
        Json::Object(_) => return Err("named parameters go in one object right after the SQL".into()),
    };
    Ok(Value { kind })
}

fn plain(sql: &str) -> Statement {
    Statement { sql: sql.to_owned(), params: Vec::new(), named_params: Vec::new() }
}

/// Read, write, or a `WITH` that may be either.
#[derive(Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
enum Kind_ {
    Read,
    Write,
    Either,
}

fn kind_of(sql: &str) -> Kind_ {
    let word: String = sql.trim_start().chars().take_while(char::is_ascii_alphabetic).collect();
    match word.to_ascii_uppercase().as_str() {
        "SELECT" | "VALUES" | "EXPLAIN" => Kind_::Read,
        "PRAGMA" if !sql.contains('=') => Kind_::Read,
        "WITH" => Kind_::Either,
        _ => Kind_::Write,
    }
}

/// Go's durations as rqlite takes them: `500ms`, `2s`, `1m`, `1h`, `1.5s`.
fn parse_go_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "ns" => number / 1e9,
        "us" | "µs" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(1e9)))
}

/// Who answered a request, and the log index its last write was applied at
/// (0 for reads: rqlite gives none for them either, short of `strong`).
#[derive(Clone, Copy, Default)]
struct Served {
    node: u64,
    index: u64,
}

fn respond(params: &Params, results: Vec<Json>, started: Instant, served: Served) -> Response {
    let mut body = json!({ "results": results });
    if params.contains_key("timings") {
        body["time"] = json!(started.elapsed().as_secs_f64());
    }
    if params.contains_key("raft_index") && served.index != 0 {
        body["raft_index"] = json!(served.index);
    }
    json_response(StatusCode::OK, params, &body, served.node)
}

pub(super) fn json_response(code: StatusCode, params: &Params, body: &Json, served_by: u64) -> Response {
    let text =
        if params.contains_key("pretty") { serde_json::to_string_pretty(body) } else { serde_json::to_string(body) }
            .unwrap_or_default();
    let mut response = (code, text).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    if served_by != 0 {
        headers.insert("x-deeb-served-by", HeaderValue::from(served_by));
    }
    response
}

pub(super) fn text(code: StatusCode, message: String) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

pub(super) fn bad_request(message: String) -> Response {
    text(StatusCode::BAD_REQUEST, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_as_rqlite_writes_them() {
        let headers = HeaderMap::new();
        let body = br#"["CREATE TABLE t (a)", ["INSERT INTO t VALUES (?, ?)", 1, "x"], ["SELECT :n", {"n": 2.5}]]"#;
        let statements = parse_body(&headers, body).expect("parses");
        assert_eq!(statements.len(), 3);
        assert_eq!(
            statements[1].params,
            vec![Value { kind: Some(Kind::Integer(1)) }, Value { kind: Some(Kind::Text("x".into())) }]
        );
        assert_eq!(statements[2].named_params[0].name, ":n");
        for bad in [&b"{"[..], b"[]", b"[1]", b"[[]]", br#"[["SELECT ?", {"a": 1}, 2]]"#, br#"[["SELECT ?", [256]]]"#] {
            assert!(parse_body(&headers, bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let mut text = HeaderMap::new();
        text.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(parse_body(&text, b"SELECT 1").expect("one statement")[0].sql, "SELECT 1");
    }

    #[test]
    fn write_results_leave_zero_fields_out() {
        let created = deeb_proto::StatementResult::default();
        assert_eq!(execute_result(&created), json!({}));
        let inserted = deeb_proto::StatementResult { rows_affected: 1, last_insert_id: 7, ..Default::default() };
        assert_eq!(execute_result(&inserted), json!({"last_insert_id": 7, "rows_affected": 1}));
    }

    #[test]
    fn statements_are_sorted_into_reads_and_writes() {
        assert!(kind_of("  select 1") == Kind_::Read);
        assert!(kind_of("PRAGMA table_info(t)") == Kind_::Read);
        assert!(kind_of("PRAGMA foreign_keys = ON") == Kind_::Write);
        assert!(kind_of("WITH x AS (SELECT 1) SELECT * FROM x") == Kind_::Either);
        assert!(kind_of("INSERT INTO t VALUES (1)") == Kind_::Write);
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration("xs"), None);
    }
}
