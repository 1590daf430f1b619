//! The one-shot client commands (`exec`, `query`, `status`, `nodes`), also
//! used by the shell.

use std::time::Duration;

use deeb_client::Options;
pub use deeb_client::{Client, Error};
use deeb_proto::{
    AddNodeRequest, ExecuteResponse, QueryChunk, QueryRequest, RemoveNodeRequest, Row, StatusResponse,
    TransferLeaderRequest,
};

use super::args::{ClientArgs, Level, NodesAction};
use super::output::{self, Format};
use super::table;
use deeb_server::api::statement;

/// A client of the cluster through the node `args` names, with its TLS
/// and credentials (writes follow the leader; nothing connects until the
/// first call).
///
/// # Errors
/// A TLS file that cannot be read.
pub fn connect(args: &ClientArgs) -> Result<Client, String> {
    Ok(Client::new(&[args.addr.as_str()], client_options(args)?))
}

/// The client crate's options for `args`: TLS if a CA or client
/// certificate is given, HTTP Basic credentials if a user is.
///
/// # Errors
/// A TLS file that cannot be read, or a user without a password.
pub fn client_options(args: &ClientArgs) -> Result<Options, String> {
    let mut options = Options::default();
    if args.tls_ca.is_some() || args.tls_cert.is_some() {
        let identity = args.tls_cert.as_deref().zip(args.tls_key.as_deref());
        let tls = deeb_server::security::tls::channel_config(args.tls_ca.as_deref(), identity);
        options.tls = Some(tls.map_err(|error| error.to_string())?);
    }
    if let Some(user) = &args.user {
        let password = args.password.as_ref().ok_or("--user needs a password: set DEEB_PASSWORD (or --password)")?;
        let password = password.0.as_str();
        options.authorization = Some(deeb_server::security::basic_authorization(user, password));
    }
    Ok(options)
}

/// A fully read query result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
    pub served_by: u64,
}

/// A failed call as the CLI prints it: the message and its code.
pub fn describe_error(error: &Error) -> String {
    error.describe()
}

/// Runs one write statement through the leader, with an idempotency key,
/// retrying while its outcome is unknown (the client crate's
/// `execute_request`).
///
/// # Errors
/// The request's error.
pub async fn execute(client: &Client, sql: &str) -> Result<ExecuteResponse, Error> {
    client.execute_statements(vec![statement(sql)]).await
}

/// Runs one query and reads the whole result.
///
/// # Errors
/// The server's error (also mid-stream).
pub async fn query(
    client: &Client,
    sql: &str,
    level: Level,
    max_staleness: Option<Duration>,
    timeout: Option<Duration>,
) -> Result<QueryResult, Error> {
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
/// The server's error (also mid-stream).
pub async fn query_chunks(
    client: &Client,
    sql: &str,
    level: Level,
    max_staleness: Option<Duration>,
    timeout: Option<Duration>,
    mut sink: impl FnMut(QueryChunk) -> bool,
) -> Result<(), Error> {
    let millis = |bound: Duration| u64::try_from(bound.as_millis()).unwrap_or(u64::MAX).max(1);
    let request = QueryRequest {
        statement: Some(statement(sql)),
        consistency: consistency(level) as i32,
        max_staleness_ms: max_staleness.map_or(0, millis),
        timeout_ms: timeout.map_or(0, millis),
    };
    let mut rows = client.query_request(request).await?;
    while let Some(chunk) = rows.next_chunk().await? {
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

/// The status of the node the client was given.
///
/// # Errors
/// The node could not be reached or failed.
pub async fn status(client: &Client) -> Result<StatusResponse, Error> {
    client.status(&client.nodes()[0]).await
}

/// Carries out a `deeb nodes` action (any node forwards it to the leader)
/// and describes the result.
///
/// # Errors
/// The server's error.
pub async fn nodes(client: &Client, action: &NodesAction) -> Result<String, Error> {
    let mut grpc = client.pool().client(&client.nodes()[0])?;
    let response = match action {
        NodesAction::Add { id, address, learner } => {
            let request = AddNodeRequest { node_id: *id, address: address.clone(), learner: *learner, promote: false };
            grpc.add_node(request).await?
        }
        NodesAction::Remove { id } => grpc.remove_node(RemoveNodeRequest { node_id: *id }).await?,
        NodesAction::Transfer { id } => grpc.transfer_leader(TransferLeaderRequest { node_id: *id }).await?,
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
    let columns = ["id", "client address", "peer address", "kind", "matched"].map(str::to_owned);
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
                    text(&member.client_address),
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
