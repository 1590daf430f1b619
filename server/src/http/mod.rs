//! The HTTP API (real processes only: the simulator's transport has no
//! HTTP): rqlite's `/db/*` endpoints and health probes, as thin adapters
//! onto the same gRPC service (`crate::api::DeebService`), called in
//! process, so forwarding, retries, consistency, permissions and errors
//! are the gRPC API's own. Served on `--http-listen` through the same
//! accept loop as gRPC (`crate::security::listener`): the client TLS
//! settings, the connection limit and the idle timeout apply.

mod rqlite;

use std::future::Future;
use std::io;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;

use crate::api::DeebService;
use crate::security::listener::Conn;
use crate::security::{ConnInfo, Side};
use rqlite::Endpoint;

/// Serves the HTTP API on `connections` until `stop` resolves.
///
/// # Errors
/// The server failed.
pub async fn serve(
    connections: ReceiverStream<io::Result<Conn>>,
    api: DeebService,
    body_bytes_max: usize,
    stop: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let execute =
        |state, conn, params, headers, body| rqlite::db(Endpoint::Execute, state, conn, params, headers, body);
    let query = |state, conn, params, headers, body| rqlite::db(Endpoint::Query, state, conn, params, headers, body);
    let request =
        |state, conn, params, headers, body| rqlite::db(Endpoint::Request, state, conn, params, headers, body);
    let router = Router::new()
        .route("/db/execute", post(execute))
        .route("/db/query", get(query).post(query))
        .route("/db/request", post(request))
        .route("/status", get(rqlite::status))
        .route("/readyz", get(rqlite::readyz))
        .route("/livez", get(rqlite::livez))
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .with_state(api);
    let listener = Accepted(connections);
    axum::serve(listener, router.into_make_service_with_connect_info::<ConnInfo>()).with_graceful_shutdown(stop).await
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
