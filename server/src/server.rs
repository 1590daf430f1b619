//! `run_node`: opens the node, serves gRPC (the client API on the client
//! listener; the peer service, with the client API for requests forwarded
//! between nodes, on the peer listener, or both on one in single-port
//! mode), runs the event loop, and joins a cluster if asked.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use deeb_core::disk::Disk;
use deeb_core::sql::SqliteStateMachine;
use deeb_core::{Node, OpenError};

use crate::backend::Backend;
use deeb_proto::deeb_server::DeebServer;
use deeb_proto::peer_server::PeerServer;
use deeb_proto::{AddNodeRequest, StatusRequest};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::api::{DeebService, QueryTimeouts};
use crate::client::connect;
use crate::config::{ConfigError, ServeConfig};
use crate::event_loop::{EventLoop, Input, LoopClock, Stopped};
use crate::handle::NodeHandle;
use crate::identity::{self, ClusterId, PeerIdentities};
use crate::metrics::{Metrics, TimedDisk};
use crate::peer::{ClientAddresses, PeerSenders, PeerService};
use crate::query::ShuttingDown;
use crate::security::Security;

/// Why a node could not run or stopped with an error.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("opening the node: {0}")]
    Open(#[from] OpenError),
    #[error("serving on {message}")]
    Transport { message: String },
    #[error("data directory identity or cluster id: {0}")]
    Identity(std::io::Error),
    #[error("node stopped: {0}")]
    Stopped(#[from] Stopped),
    #[error("security settings: {0}")]
    Security(#[from] crate::security::SecurityError),
    #[error("joining through {address}: {message}")]
    Join { address: String, message: String },
}

/// The wall clock when the node's clock read zero, given it reads `now`
/// (the change stream's timestamps). 0 in the simulator, whose runs must
/// repeat byte for byte.
fn clock_epoch_unix_ms(now: Duration) -> u64 {
    if cfg!(madsim) {
        return 0;
    }
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(wall.saturating_sub(now).as_millis()).unwrap_or(0)
}

/// The node's database: its MySQL server with `--mysql-url` (waited for
/// while it cannot be reached, off the runtime), otherwise SQLite in the
/// data directory.
async fn open_backend(config: &ServeConfig) -> Result<Backend, OpenError> {
    #[cfg(not(madsim))]
    if let Some(url) = &config.mysql_url {
        tracing::info!(node = config.id().0, mysql = %url, "data in MySQL");
        let (url, check_every) = (url.0.clone(), config.core.snapshot_interval_entries);
        let opened = tokio::task::spawn_blocking(move || {
            let mut sm = crate::backend::mysql::MysqlStateMachine::open(&url)?;
            sm.set_check_interval(check_every);
            Ok::<_, deeb_core::sql::SqlError>(sm)
        })
        .await
        .map_err(|error| OpenError::Invalid(format!("opening MySQL: {error}")))?;
        return Ok(Backend::Mysql(opened?));
    }
    std::fs::create_dir_all(&config.data_dir)?;
    let mut sm = SqliteStateMachine::open(&config.data_dir.join("state.db"), config.core.seed)?;
    sm.set_mutations(config.core.mutations.clone());
    Ok(Backend::Sqlite(sm))
}

/// Runs one node until `shutdown` resolves or it stops on a fatal error.
/// `disk` holds the raft log (`FsDisk` on `data_dir/log` for real; the
/// simulator passes its own).
///
/// # Errors
/// Bad configuration, a data directory that cannot be opened, a listen
/// address that cannot be bound, or a fatal node error (exit and restart).
pub async fn run_node<D: Disk + 'static>(
    config: ServeConfig,
    disk: D,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    config.validate()?;
    let clock = LoopClock::new(Instant::now(), config.hooks.clock.clone());
    let metrics = Metrics::new();
    let disk = TimedDisk::new(disk, metrics.clone());
    let mut core = config.core.clone();
    core.clock_epoch_unix_ms = clock_epoch_unix_ms(clock.now());
    // A node waiting for its MySQL still stops when told to.
    let mut shutdown = std::pin::pin!(shutdown);
    let backend = tokio::select! {
        biased;
        () = &mut shutdown => return Ok(()),
        backend = open_backend(&config) => backend?,
    };
    let mut node = Node::open_with(core, disk, backend, &config.data_dir, &config.peers, clock.now())?;
    let statement_clock = std::time::Instant::now();
    node.set_clock(Box::new(move || statement_clock.elapsed()));
    if let Some(observer) = config.hooks.observer.clone() {
        node.set_observer(Box::new(move |id, event| observer(id, event)));
    }
    crate::backup::clear_scratch(&config.data_dir);
    let identity = identity::load_or_create(&config.data_dir).map_err(ServeError::Identity)?;
    let peer_identities = PeerIdentities::load(&config.data_dir).map_err(ServeError::Identity)?;
    let cluster =
        ClusterId::load(&config.data_dir, &config.peers, &config.cluster_token).map_err(ServeError::Identity)?;
    tracing::info!(node = config.id().0, listen = %config.listen, identity = format!("{identity:016x}"), "node open");
    let security = Arc::new(Security::load(&config.security)?);
    if !security.has_users() {
        tracing::info!("no --auth users file: every client may read, write and change membership");
    } else if security.peer_tls().is_none() {
        tracing::warn!(
            "--auth without peer TLS: whoever reaches the peer listener is believed as a node and may name any \
             user; keep it on loopback or a network only the nodes reach"
        );
    }
    #[cfg(not(madsim))]
    crate::security::reload_on_sighup(security.clone());
    let (inputs, receiver) = mpsc::channel(INPUT_QUEUE_MAX);
    let handle = NodeHandle::new(inputs.clone(), config.request_timeout, config.id());
    let (stop_server, server_stopped) = oneshot::channel::<()>();
    let (server_failed, mut server_failure) = oneshot::channel::<String>();
    let shutting_down = ShuttingDown::default();
    let client_addresses = ClientAddresses::default();
    client_addresses.note(config.id().0, config.advertised());
    let server = tokio::spawn(serve_grpc(
        config.clone(),
        (security.clone(), (peer_identities.clone(), cluster.clone())),
        (handle.clone(), metrics.clone(), client_addresses.clone()),
        shutting_down.clone(),
        inputs.clone(),
        server_stopped,
        server_failed,
    ));
    if !config.join.is_empty() {
        tokio::spawn(join_in_background(config.clone(), security.clone(), handle.clone()));
    }
    let scheduled = config.backups.clone().map(|schedule| {
        let scratch = crate::backup::scratch_dir(&config.data_dir);
        tokio::spawn(crate::scheduled::run(schedule, handle.clone(), metrics.clone(), scratch))
    });
    let addresses = (config.advertise.clone(), client_addresses);
    let credentials = (identity, cluster.clone());
    let sending = (security, metrics.clone());
    let mut peers = PeerSenders::new(config.id(), addresses, credentials, inputs.clone(), PEER_QUEUE_MAX, sending);
    peers.inject_faults(config.hooks.transport.clone());
    peers.dead_after(config.core.election_timeout());
    let chunk_bytes_max = config.core.limits.snapshot_chunk_bytes_max;
    let work_time = config.hooks.work_time.clone();
    let event_loop = EventLoop::new(node, clock, receiver, inputs, peers, chunk_bytes_max, (work_time, metrics))
        .forgetting_removed_peers(peer_identities);
    let mut failure = None;
    let stop = async {
        tokio::select! {
            biased;
            () = &mut shutdown => {}
            message = &mut server_failure => failure = message.ok(),
        }
    };
    let result = event_loop.run(stop, config.shutdown_transfer_timeout).await;
    shutting_down.store(true, Ordering::Relaxed);
    if let Some(scheduled) = scheduled {
        scheduled.abort();
    }
    let _ = stop_server.send(());
    // Graceful gRPC shutdown waits for open connections (peers keep theirs);
    // bound it, then drop whatever is left.
    let abort = server.abort_handle();
    if tokio::time::timeout(SERVER_DRAIN_TIMEOUT, server).await.is_err() {
        abort.abort();
    }
    if let Some(message) = failure {
        return Err(ServeError::Transport { message });
    }
    result.map_err(ServeError::from)
}

async fn serve_grpc(
    config: ServeConfig,
    (security, peer_checks): (Arc<Security>, (PeerIdentities, ClusterId)),
    (handle, metrics, client_addresses): (NodeHandle, Metrics, ClientAddresses),
    shutting_down: ShuttingDown,
    inputs: mpsc::Sender<Input>,
    stop: oneshot::Receiver<()>,
    failed: oneshot::Sender<String>,
) {
    let limits = &config.core.limits;
    let timeouts = QueryTimeouts { default: config.statement_timeout, max: config.statement_timeout_max };
    let (rows_max, bytes_max) = (limits.query_chunk_rows_max, limits.query_chunk_bytes_max);
    let api = DeebService::new(
        handle,
        (rows_max, bytes_max),
        timeouts,
        shutting_down,
        client_addresses.clone(),
        (security.clone(), metrics.clone()),
        (crate::backup::scratch_dir(&config.data_dir), config.mysql_url.is_none()),
    );
    let receiving = (security.clone(), metrics);
    let peers = PeerServer::new(PeerService::new(inputs, client_addresses, peer_checks, receiving));
    // Raise tonic's 4 MiB decoding limit to the largest raft message we may
    // send. (madsim's transport does not encode messages: no limit there.)
    #[cfg(not(madsim))]
    let peers = peers.max_decoding_message_size(peer_message_bytes_max(limits));
    let http_api = api.clone();
    let api = DeebServer::new(api);
    // Requests a little over the request limit get deeb's own error naming
    // the limit, not tonic's; responses are bounded by the limits (see
    // `client_response_bytes_max`).
    #[cfg(not(madsim))]
    let api = api
        .max_decoding_message_size(client_request_bytes_max(limits))
        .max_encoding_message_size(deeb_client::MESSAGE_BYTES_MAX);
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = stop.await;
        let _ = stopping.send(true);
    });
    let until_stopped = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stopped| *stopped).await;
        }
    };
    let (address, result) = serve_listeners(&config, &security, (api, http_api), peers, until_stopped).await;
    if let Err(error) = result {
        tracing::error!(listen = %address, %error, "a listener failed (gRPC or HTTP)");
        let _ = failed.send(format!("{address}: {error}"));
    }
}

/// The two gRPC services as served (the simulator's generated servers take
/// an interceptor type too).
#[cfg(not(madsim))]
type ApiServer = DeebServer<DeebService>;
#[cfg(not(madsim))]
type PeersServer = PeerServer<PeerService>;
#[cfg(madsim)]
type ApiServer = DeebServer<DeebService, tonic::codegen::IdentityInterceptor>;
#[cfg(madsim)]
type PeersServer = PeerServer<PeerService, tonic::codegen::IdentityInterceptor>;

/// The services on the simulator's transport: one listener or two, no TLS
/// and no connection limits (its network has no sockets to exhaust).
#[cfg(madsim)]
async fn serve_listeners<F: Future<Output = ()>>(
    config: &ServeConfig,
    _security: &Security,
    (api, _): (ApiServer, DeebService),
    peers: PeersServer,
    until_stopped: impl Fn() -> F,
) -> (SocketAddr, Result<(), String>) {
    let (address, result) = match config.peer_listen {
        None => {
            let router = tonic::transport::Server::builder().add_service(api).add_service(peers);
            (config.listen, router.serve_with_shutdown(config.listen, until_stopped()).await)
        }
        Some(peer_listen) => {
            let clients = tonic::transport::Server::builder().add_service(api.clone());
            let nodes = tonic::transport::Server::builder().add_service(api).add_service(peers);
            tokio::select! {
                result = clients.serve_with_shutdown(config.listen, until_stopped()) => (config.listen, result),
                result = nodes.serve_with_shutdown(peer_listen, until_stopped()) => (peer_listen, result),
            }
        }
    };
    (address, result.map_err(|error| error.to_string()))
}

/// The services on real sockets: the client listener (TLS if configured)
/// serves only the client API; the peer listener (mutual TLS if
/// configured) serves the peer service and the client API for requests
/// forwarded between nodes and joins. Each accepts up to the connection
/// limit and closes connections that stay silent (see
/// `crate::security::listener`).
#[cfg(not(madsim))]
async fn serve_listeners<F: Future<Output = ()> + Send + 'static>(
    config: &ServeConfig,
    security: &Security,
    (api, http_api): (ApiServer, DeebService),
    peers: PeersServer,
    until_stopped: impl Fn() -> F,
) -> (SocketAddr, Result<(), String>) {
    use crate::security::listener::{incoming, Settings};
    use crate::security::Side;
    let limits = config.security.limits;
    let metrics = http_api.metrics().clone();
    let builder = || {
        // A client that answers no ping for the idle timeout is dropped.
        let ping = limits.idle_timeout / 2;
        tonic::transport::Server::builder()
            .max_concurrent_streams(limits.max_streams_per_connection)
            .http2_keepalive_interval(Some(ping))
            .http2_keepalive_timeout(Some(ping))
            .http2_max_header_list_size(HEADER_LIST_BYTES_MAX)
    };
    let serve = |address: SocketAddr, side: Side, tls, router: tonic::transport::server::Router| {
        let stopped = until_stopped();
        let metrics = metrics.clone();
        async move {
            let listener = tokio::net::TcpListener::bind(address).await.map_err(|error| error.to_string())?;
            let settings = Settings {
                side,
                listener: side.name(),
                tls,
                max_connections: limits.max_connections,
                idle_timeout: limits.idle_timeout,
                metrics,
            };
            let connections = incoming(listener, settings);
            router.serve_with_incoming_shutdown(connections, stopped).await.map_err(|error| error.to_string())
        }
    };
    match config.peer_listen {
        None => {
            tracing::warn!(
                listen = %config.listen,
                "single-port mode: the peer service (raft messages, snapshots) is served on the client listener; \
                 for deeb dev and tests only, give --peer-listen otherwise"
            );
            let http = serve_http(config, security, http_api, &until_stopped);
            let router = builder().add_service(api).add_service(peers);
            tokio::select! {
                result = serve(config.listen, Side::Both, None, router) => (config.listen, result),
                (address, result) = http => (address, result),
            }
        }
        Some(peer_listen) => {
            tracing::info!(
                listen = %config.listen,
                peer_listen = %peer_listen,
                client_tls = security.client_tls().is_some(),
                peer_tls = security.peer_tls().is_some(),
                "client and peer listeners"
            );
            let http = serve_http(config, security, http_api, &until_stopped);
            let clients = builder().add_service(api.clone());
            let nodes = builder().add_service(api).add_service(peers);
            tokio::select! {
                result = serve(config.listen, Side::Clients, security.client_tls(), clients) => (config.listen, result),
                result = serve(peer_listen, Side::Peers, security.peer_tls(), nodes) => (peer_listen, result),
                (address, result) = http => (address, result),
            }
        }
    }
}

/// The HTTP API on `--http-listen` (with the client listener's TLS and
/// limits); never resolves without it.
#[cfg(not(madsim))]
async fn serve_http<F: Future<Output = ()> + Send + 'static>(
    config: &ServeConfig,
    security: &Security,
    api: DeebService,
    until_stopped: &impl Fn() -> F,
) -> (SocketAddr, Result<(), String>) {
    use crate::security::listener::{incoming, Settings};
    let Some(address) = config.http_listen else { return std::future::pending().await };
    let limits = config.security.limits;
    let result = async {
        let listener = tokio::net::TcpListener::bind(address).await.map_err(|error| error.to_string())?;
        tracing::info!(http_listen = %address, "HTTP API (rqlite's /db/*)");
        let settings = Settings {
            side: crate::security::Side::Clients,
            listener: "http",
            tls: security.client_tls(),
            max_connections: limits.max_connections,
            idle_timeout: limits.idle_timeout,
            metrics: api.metrics().clone(),
        };
        let body_bytes_max = client_request_bytes_max(&config.core.limits);
        let limits = (body_bytes_max, settings.idle_timeout);
        crate::http::serve(incoming(listener, settings), api, limits, until_stopped())
            .await
            .map_err(|error| error.to_string())
    };
    (address, result.await)
}

/// The largest client request decoded: twice the request limit, so that
/// one over it is refused by deeb with the limit named.
#[cfg_attr(madsim, allow(dead_code))]
fn client_request_bytes_max(limits: &deeb_core::Limits) -> usize {
    2 * limits.request_bytes_max + ENVELOPE_BYTES_MAX
}

/// The largest response a node sends a client: a query chunk (up to
/// `query_chunk_bytes_max`, then one more row, no larger than the largest
/// row a write may build) or a write's results (1 MiB of returned rows).
pub fn client_response_bytes_max(limits: &deeb_core::Limits) -> usize {
    limits.query_chunk_bytes_max + limits.request_row_changes_bytes_max + ENVELOPE_BYTES_MAX
}

/// A raft message holds at least one entry (a whole batch, up to
/// `batch_bytes_max`) and otherwise up to `raft_message_bytes_max`; a
/// `RaftBatch` adds up to `PEER_BATCH_BYTES_MAX` of further messages.
#[cfg_attr(madsim, allow(dead_code))]
fn peer_message_bytes_max(limits: &deeb_core::Limits) -> usize {
    let message = limits.batch_bytes_max.max(limits.raft_message_bytes_max as usize);
    message + crate::peer::PEER_BATCH_BYTES_MAX + ENVELOPE_BYTES_MAX
}

async fn join_in_background(config: ServeConfig, security: Arc<Security>, handle: NodeHandle) {
    if let Err(error) = join(&config, &security, &handle).await {
        tracing::error!(%error, "could not join the cluster");
    }
}

/// Asks the cluster at `config.join` (its members' addresses, tried in
/// turn) to add this node as a learner, waits until it has caught up, then
/// (unless it should stay a learner) asks to promote it to voter. Skipped
/// if this node is already a member.
async fn join(config: &ServeConfig, security: &Security, handle: &NodeHandle) -> Result<(), ServeError> {
    let join_error = |message: String| ServeError::Join { address: config.join.join(","), message };
    let status = handle.status().await.map_err(|error| join_error(error.to_string()))?;
    if status.members.iter().any(|member| member.id == config.id()) {
        tracing::info!("already a member; not joining again");
        return Ok(());
    }
    let via = add_self(config, security, handle, Step::AddLearner).await.map_err(join_error)?;
    tracing::info!(%via, "joined as learner");
    if config.join_as_learner {
        return Ok(());
    }
    wait_caught_up(config, security, handle).await.map_err(join_error)?;
    // Refused if we were removed while catching up: then we stay out.
    let via = add_self(config, security, handle, Step::Promote).await.map_err(join_error)?;
    tracing::info!(%via, "promoted to voter");
    Ok(())
}

/// The two steps of joining.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    AddLearner,
    Promote,
}

/// Asks the members at `config.join`, in turn until one answers, to take
/// `step`; returns the address that did. A member that cannot be reached
/// (not yet started, its DNS name not yet published) is tried again later.
async fn add_self(
    config: &ServeConfig,
    security: &Security,
    handle: &NodeHandle,
    step: Step,
) -> Result<String, String> {
    let request = AddNodeRequest {
        node_id: config.id().0,
        address: config.advertise.clone(),
        learner: step == Step::AddLearner,
        promote: step == Step::Promote,
    };
    let deadline = Instant::now() + JOIN_TIMEOUT;
    for address in config.join.iter().cycle() {
        let attempt = match connect(security, address).await {
            Ok(mut client) => client.add_node(request.clone()).await.map(drop),
            Err(error) => Err(tonic::Status::unavailable(error.to_string())),
        };
        match attempt {
            Ok(()) => return Ok(address.clone()),
            // Refused for good (e.g. no longer a learner): do not retry.
            Err(refused) if refused.code() == tonic::Code::InvalidArgument => return Err(refused.message().to_owned()),
            Err(status) if Instant::now() >= deadline => return Err(status.message().to_owned()),
            Err(status) => tracing::debug!(%address, error = %status.message(), "join attempt failed; retrying"),
        }
        tokio::time::sleep(JOIN_RETRY_PAUSE).await;
        if step == Step::AddLearner && added_before(config, handle).await? {
            return Ok(address.clone());
        }
    }
    Err("no member address to join through".to_owned())
}

/// Before asking again to be added: true if an earlier attempt (whose
/// answer was lost) added this node, which now holds itself as a member.
///
/// # Errors
/// This node was added and then removed (an operator removed it while it
/// joined): asking again would undo the removal, so it stays out.
async fn added_before(config: &ServeConfig, handle: &NodeHandle) -> Result<bool, String> {
    let status = handle.status().await.map_err(|error| error.to_string())?;
    if status.members.iter().any(|member| member.id == config.id()) {
        return Ok(true);
    }
    // A joiner's log stays empty until it is in the configuration: the
    // leader replicates only to members.
    match status.applied_index.0 > 0 {
        true => Err("removed from the cluster while joining; not asking to be added again".to_owned()),
        false => Ok(false),
    }
}

/// Waits (bounded) until this node has applied what the cluster had
/// committed when we asked (the first member at `config.join` to answer).
async fn wait_caught_up(config: &ServeConfig, security: &Security, handle: &NodeHandle) -> Result<(), String> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let mut target = None;
    for address in config.join.iter().cycle() {
        if Instant::now() >= deadline {
            break;
        }
        let Some(target) = target else {
            let status = match connect(security, address).await {
                Ok(mut client) => client.status(StatusRequest::default()).await.map_err(|s| s.message().to_owned()),
                Err(error) => Err(error.to_string()),
            };
            match status {
                Ok(status) => target = Some(status.into_inner().commit_index),
                Err(error) => {
                    tracing::debug!(%address, %error, "asking for the commit index; trying the next member");
                    tokio::time::sleep(JOIN_RETRY_PAUSE).await;
                }
            }
            continue;
        };
        let applied = handle.status().await.map_err(|error| error.to_string())?.applied_index.0;
        if applied >= target {
            return Ok(());
        }
        tokio::time::sleep(JOIN_RETRY_PAUSE).await;
    }
    match target {
        Some(target) => Err(format!("did not catch up to index {target} in time")),
        None => Err("no member answered with its commit index in time".to_owned()),
    }
}

/// Bound on a request's headers (HTTP/2 header list).
#[cfg_attr(madsim, allow(dead_code))]
const HEADER_LIST_BYTES_MAX: u32 = 64 * 1024;
/// Framing around a raft message (entry headers, batch fields).
const ENVELOPE_BYTES_MAX: usize = 1024 * 1024;
/// Bound on draining client and peer connections at shutdown.
const SERVER_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// Inputs waiting for the event loop.
const INPUT_QUEUE_MAX: usize = 4096;
/// Raft messages queued per peer before new ones are dropped.
const PEER_QUEUE_MAX: usize = 1024;
/// Bound on joining a cluster (each step).
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
const JOIN_RETRY_PAUSE: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    /// deeb's own clients accept every response a node may send, and a
    /// request over the limit reaches deeb's check (which names the limit).
    #[test]
    fn message_limits_are_symmetric() {
        let limits = deeb_core::Limits::default();
        assert!(client_response_bytes_max(&limits) <= deeb_client::MESSAGE_BYTES_MAX);
        assert!(client_request_bytes_max(&limits) <= deeb_client::MESSAGE_BYTES_MAX);
        assert!(client_request_bytes_max(&limits) > limits.request_bytes_max);
    }
}
