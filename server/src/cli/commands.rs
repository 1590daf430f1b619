//! The one-shot client commands (`exec`, `query`, `status`, `nodes`), also
//! used by the shell.

use std::time::Duration;

use deeb_proto::deeb_client::DeebClient;
use deeb_proto::{
    AddNodeRequest, ExecuteRequest, ExecuteResponse, QueryChunk, QueryRequest, RemoveNodeRequest, Row, StatusRequest,
    StatusResponse, TransferLeaderRequest,
};
use tonic::transport::Channel;

use super::args::{Level, NodesAction};
use super::output::{self, Format};
use super::table;
use crate::api::statement;

/// A connected client.
pub type Client = DeebClient<Channel>;

/// A fully read query result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
    pub served_by: u64,
}

/// A failed call as the CLI prints it: the message and, from the node's
/// error detail, its code (and SQLite's extended code), or the transport's
/// gRPC code when no node answered.
pub fn describe_error(status: &tonic::Status) -> String {
    match crate::errors::detail_of(status) {
        Some(detail) => {
            let code = detail.code().as_str_name().trim_start_matches("ERROR_CODE_").to_ascii_lowercase();
            match detail.sqlite_code {
                0 => format!("{} [{code}]", status.message()),
                sqlite => format!("{} [{code}, sqlite {sqlite}]", status.message()),
            }
        }
        None => format!("{} [{:?}]", status.message(), status.code()),
    }
}

/// Runs one write statement, with an idempotency key, retrying while its
/// outcome is unknown.
///
/// # Errors
/// The server's status.
pub async fn execute(client: &mut Client, sql: &str) -> Result<ExecuteResponse, tonic::Status> {
    let request = ExecuteRequest { statements: vec![statement(sql)], idempotency_key: new_idempotency_key() };
    execute_with_retries(client, request, WRITE_RETRY_BUDGET).await
}

/// Sends a write and, while its outcome is unknown (a broken connection, a
/// leader change, a request timeout) or no leader is there yet, sends it
/// again with the same idempotency key: a retry of a request that was
/// applied gets its first answer, so it is never applied twice. Definite
/// answers (results, SQL errors, limits) come back at once. No retry starts
/// after `budget` (an attempt itself is bounded by the server's request
/// timeout).
///
/// # Errors
/// The last status when it is definite or the budget is spent.
pub async fn execute_with_retries(
    client: &mut Client,
    request: ExecuteRequest,
    budget: Duration,
) -> Result<ExecuteResponse, tonic::Status> {
    assert!(!request.idempotency_key.is_empty(), "a retried write needs an idempotency key");
    let started = tokio::time::Instant::now();
    let mut wait = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match client.execute(request.clone()).await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) if started.elapsed() + wait < budget && worth_retrying(&status) => {
                tracing::debug!(attempt, message = status.message(), "retrying the write with its idempotency key");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
                attempt += 1;
            }
            Err(status) => return Err(status),
        }
    }
}

/// True for a write's failure that a retry with the same key may fix.
fn worth_retrying(status: &tonic::Status) -> bool {
    use deeb_proto::ErrorCode;
    match crate::errors::detail_of(status) {
        // No node answered (connection refused or broken): unknown.
        None => true,
        Some(detail) => match detail.code() {
            ErrorCode::OutcomeUnknown | ErrorCode::Unavailable | ErrorCode::Overloaded => true,
            // The request's own timeout (not a statement's deadline).
            ErrorCode::Timeout => !detail.not_applied,
            _ => false,
        },
    }
}

/// How long one CLI write keeps retrying.
pub const WRITE_RETRY_BUDGET: Duration = Duration::from_secs(5);

/// A key no other request has: this process, the time, a counter.
pub fn new_idempotency_key() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("deeb-cli-{}-{nanos:x}-{count}", std::process::id())
}

/// Runs one query and reads the whole result.
///
/// # Errors
/// The server's status (also mid-stream).
pub async fn query(
    client: &mut Client,
    sql: &str,
    level: Level,
    max_staleness: Option<Duration>,
    timeout: Option<Duration>,
) -> Result<QueryResult, tonic::Status> {
    let mut result = QueryResult::default();
    query_chunks(client, sql, level, max_staleness, timeout, |chunk| {
        if result.columns.is_empty() {
            result.columns = column_names(&chunk);
        }
        result.served_by = chunk.served_by;
        result.rows.extend(chunk.rows);
        true
    })
    .await?;
    Ok(result)
}

/// Runs one query and hands its chunks to `sink` as they arrive (the first
/// names the columns); `sink` returning false ends the query early, which
/// stops it on the server too.
///
/// # Errors
/// The server's status (also mid-stream).
pub async fn query_chunks(
    client: &mut Client,
    sql: &str,
    level: Level,
    max_staleness: Option<Duration>,
    timeout: Option<Duration>,
    mut sink: impl FnMut(QueryChunk) -> bool,
) -> Result<(), tonic::Status> {
    let millis = |bound: Duration| u64::try_from(bound.as_millis()).unwrap_or(u64::MAX).max(1);
    let request = QueryRequest {
        statement: Some(statement(sql)),
        consistency: consistency(level) as i32,
        max_staleness_ms: max_staleness.map_or(0, millis),
        timeout_ms: timeout.map_or(0, millis),
    };
    let mut stream = client.query(request).await?.into_inner();
    while let Some(chunk) = stream.message().await? {
        if !sink(chunk) {
            break;
        }
    }
    Ok(())
}

/// The column names a chunk carries.
pub fn column_names(chunk: &QueryChunk) -> Vec<String> {
    chunk.columns.iter().map(|column| column.name.clone()).collect()
}

/// The proto consistency for a CLI level.
pub fn consistency(level: Level) -> deeb_proto::Consistency {
    match level {
        Level::Linearizable => deeb_proto::Consistency::Linearizable,
        Level::Lease => deeb_proto::Consistency::Lease,
        Level::Stale => deeb_proto::Consistency::Stale,
    }
}

/// A node's status.
///
/// # Errors
/// The server's status.
pub async fn status(client: &mut Client) -> Result<StatusResponse, tonic::Status> {
    Ok(client.status(StatusRequest::default()).await?.into_inner())
}

/// Carries out a `deeb nodes` action and describes the result.
///
/// # Errors
/// The server's status.
pub async fn nodes(client: &mut Client, action: &NodesAction) -> Result<String, tonic::Status> {
    let response = match action {
        NodesAction::Add { id, address, learner } => {
            let request = AddNodeRequest { node_id: *id, address: address.clone(), learner: *learner, promote: false };
            client.add_node(request).await?
        }
        NodesAction::Remove { id } => client.remove_node(RemoveNodeRequest { node_id: *id }).await?,
        NodesAction::Transfer { id } => client.transfer_leader(TransferLeaderRequest { node_id: *id }).await?,
    };
    Ok(format!("ok (served by node {})", response.into_inner().served_by))
}

/// A status report as text.
pub fn format_status(status: &StatusResponse) -> String {
    let leader = if status.leader_id == 0 { "unknown".to_owned() } else { status.leader_id.to_string() };
    format!(
        "node {} is {} (term {}, leader {})\ncommit index {}, applied index {}, snapshot index {}\n",
        status.node_id,
        status.role,
        status.term,
        leader,
        status.commit_index,
        status.applied_index,
        status.snapshot_index
    )
}

/// The member list as a table.
pub fn format_members(status: &StatusResponse) -> String {
    let columns = ["id", "address", "kind", "matched"].map(str::to_owned);
    let rows: Vec<Row> = status
        .members
        .iter()
        .map(|member| {
            let kind = match (member.learner, member.node_id == status.leader_id) {
                (true, _) => "learner",
                (false, true) => "voter (leader)",
                (false, false) => "voter",
            };
            Row {
                values: vec![
                    text(&member.node_id.to_string()),
                    text(&member.address),
                    text(kind),
                    text(&member.matched.to_string()),
                ],
            }
        })
        .collect();
    table::render(&columns, &rows)
}

fn text(value: &str) -> deeb_proto::Value {
    deeb_proto::Value { kind: Some(deeb_proto::value::Kind::Text(value.to_owned())) }
}

/// A write result as text: the rows its statements returned (RETURNING, a
/// SELECT), each as a table, then the summary line.
pub fn format_execute(response: &ExecuteResponse) -> String {
    format_execute_as(response, Format::Table)
}

/// A write result in `format`: JSON gives the whole response as one
/// object (ndjson one object per statement), CSV only the returned rows,
/// the text formats the returned rows and a summary line.
pub fn format_execute_as(response: &ExecuteResponse, format: Format) -> String {
    let json_result = |result: &deeb_proto::StatementResult| {
        let columns: Vec<String> = result.columns.iter().map(|column| column.name.clone()).collect();
        let mut rows = Vec::new();
        output::print_all(&mut rows, Format::Ndjson, &columns, &result.rows).expect("writing to memory");
        let rows = String::from_utf8(rows).expect("json is text");
        let rows: Vec<&str> = rows.lines().collect();
        format!(
            "{{\"rows_affected\":{},\"last_insert_id\":{},\"rows\":[{}]}}",
            result.rows_affected,
            result.last_insert_id,
            rows.join(",")
        )
    };
    match format {
        Format::Json => {
            let results: Vec<String> = response.results.iter().map(json_result).collect();
            format!(
                "{{\"results\":[{}],\"index\":{},\"served_by\":{}}}\n",
                results.join(","),
                response.index,
                response.served_by
            )
        }
        Format::Ndjson => response.results.iter().map(|result| json_result(result) + "\n").collect(),
        Format::Csv | Format::Table | Format::Line | Format::Markdown => {
            let mut out = Vec::new();
            for result in response.results.iter().filter(|result| !result.columns.is_empty()) {
                let columns: Vec<String> = result.columns.iter().map(|column| column.name.clone()).collect();
                output::print_all(&mut out, format, &columns, &result.rows).expect("writing to memory");
            }
            let mut out = String::from_utf8(out).expect("cells are text");
            if format != Format::Csv {
                let rows: u64 = response.results.iter().map(|result| result.rows_affected).sum();
                let last_id = response.results.last().map_or(0, |result| result.last_insert_id);
                let plural = if rows == 1 { "" } else { "s" };
                out.push_str(&format!(
                    "{rows} row{plural} affected (last insert id {last_id}, index {}, node {})\n",
                    response.index, response.served_by
                ));
            }
            out
        }
    }
}
