//! The HTTP API (real processes only: the simulator's transport has no
//! HTTP): rqlite's `/db/*` endpoints and health probes, as thin adapters
//! onto the same gRPC service (`crate::api::DeebService`), called in
//! process, so forwarding, retries, consistency, permissions and errors
//! are the gRPC API's own. Served on `--http-listen` through the same
//! accept loop as gRPC (`crate::security::listener`): the client TLS
//! settings, the connection limit and the idle timeout apply.

mod debezium;
mod load;
mod native;
mod rqlite;

pub use debezium::line as debezium_line;
pub use native::change_line;

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::http::{header, HeaderMap};
use axum::routing::{get, post};
use axum::Router;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use utoipa::OpenApi as _;

use crate::api::DeebService;
use crate::security::listener::Conn;
use crate::security::{ConnInfo, Side};

/// Serves the HTTP API on `connections` until `stop` resolves.
///
/// # Errors
/// The server failed.
pub async fn serve(
    connections: ReceiverStream<io::Result<Conn>>,
    api: DeebService,
    (body_bytes_max, idle_timeout): (usize, Duration),
    stop: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let router = Router::new()
        .route("/db/execute", post(rqlite::execute))
        .route("/db/query", get(rqlite::query).post(rqlite::query_post))
        .route("/db/request", post(rqlite::request))
        .route("/status", get(rqlite::status))
        .route("/readyz", get(rqlite::readyz))
        .route("/livez", get(rqlite::livez))
        .route("/nodes", get(rqlite::nodes))
        .route("/leader", get(rqlite::leader))
        .route("/metrics", get(rqlite::metrics))
        .route("/db/backup", get(rqlite::backup))
        .route("/db/load", post(load::load))
        .route("/api/v1/raft/progress", get(native::raft_progress))
        .route("/api/v1/execute", post(native::execute))
        .route("/api/v1/query", post(native::query))
        .route("/api/v1/status", get(native::status))
        .route("/api/v1/watch", get(native::watch))
        .route("/api/v1/add-node", post(native::add_node))
        .route("/api/v1/remove-node", post(native::remove_node))
        .route("/api/v1/transfer-leader", post(native::transfer_leader))
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .layer(axum::Extension(native::KeepAlive(idle_timeout / 2)))
        .with_state(api)
        .merge(utoipa_swagger_ui::SwaggerUi::new("/openapi-ui").url("/openapi.json", ApiDoc::openapi()));
    let listener = Accepted(connections);
    axum::serve(listener, router.into_make_service_with_connect_info::<ConnInfo>()).with_graceful_shutdown(stop).await
}

/// The OpenAPI document, from the handlers' annotations and types.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "deeb", description = "deeb's HTTP API: deeb's own JSON API under /api/v1/ (the gRPC \
        service's calls and fields), and rqlite's /db/* API for rqlite's clients."),
    paths(
        rqlite::execute,
        rqlite::query,
        rqlite::query_post,
        rqlite::request,
        rqlite::status,
        rqlite::readyz,
        rqlite::livez,
        rqlite::nodes,
        rqlite::leader,
        rqlite::metrics,
        rqlite::backup,
        load::load,
        native::raft_progress,
        native::execute,
        native::query,
        native::status,
        native::watch,
        native::add_node,
        native::remove_node,
        native::transfer_leader,
    ),
    tags(
        (name = "rqlite", description = "rqlite's API, for rqlite's clients (README: rqlite compatibility)"),
        (name = "native", description = "deeb's own API: the gRPC service's calls as JSON"),
        (name = "health", description = "Probes"),
    ),
)]
struct ApiDoc;

/// One HTTP request's caller: the gRPC service it calls into, with the
/// connection and credentials it came with (an extractor).
struct Call {
    api: DeebService,
    conn: ConnInfo,
    headers: HeaderMap,
}

impl axum::extract::FromRequestParts<DeebService> for Call {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        api: &DeebService,
    ) -> Result<Self, Self::Rejection> {
        let conn = parts.extensions.get::<ConnectInfo<ConnInfo>>().map(|info| info.0.clone());
        // Always there: the router is served with `ConnInfo` as connect info.
        let conn = conn.unwrap_or(ConnInfo { side: Side::Clients, remote: None, peer_cert: None, over_limit: false });
        Ok(Call { api: api.clone(), conn, headers: parts.headers.clone() })
    }
}

impl Call {
    /// A gRPC request carrying this HTTP request's connection and credentials.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.extensions_mut().insert(self.conn.clone());
        request.extensions_mut().insert(crate::metrics::Api::Http);
        if let Some(value) = self.headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()) {
            if let Ok(value) = value.parse() {
                request.metadata_mut().insert("authorization", value);
            }
        }
        request
    }
}

/// The accept loop's connections as axum's listener.
struct Accepted(ReceiverStream<io::Result<Conn>>);

impl axum::serve::Listener for Accepted {
    type Io = Conn;
    type Addr = ConnInfo;

    async fn accept(&mut self) -> (Conn, ConnInfo) {
        loop {
            match self.0.next().await {
                Some(Ok(conn)) => {
                    let info = tonic::transport::server::Connected::connect_info(&conn);
                    return (conn, info);
                }
                Some(Err(_)) => {}
                // The accept loop stopped: so does serving, by `stop`.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<ConnInfo> {
        Ok(ConnInfo { side: Side::Clients, remote: None, peer_cert: None, over_limit: false })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Accepted>> for ConnInfo {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Accepted>) -> ConnInfo {
        stream.remote_addr().clone()
    }
}
