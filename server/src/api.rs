//! The client gRPC API (`Deeb` service). Writes and admin calls that reach
//! a follower are forwarded to the leader and the answer relayed; while no
//! leader is known they are retried until the request timeout.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deeb_core::{AdminError, Consistency, MemberChange, NodeId, ReadError, Role, Status as NodeStatus, WriteError};
use deeb_proto::deeb_server::Deeb;
use deeb_proto::{
    AddNodeRequest, AdminResponse, BackupChunk, BackupRequest, Change, ExecuteRequest, ExecuteResponse, MemberStatus,
    QueryChunk, QueryRequest, RemoveNodeRequest, Statement, StatusRequest, StatusResponse, TransferLeaderRequest,
    WatchRequest,
};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::backup;
use crate::client::{forwarded_for, is_forwarded};
use crate::errors::{to_status, ServerError};
use crate::handle::NodeHandle;
use crate::metrics::{Api, Metrics};
use crate::peer::ClientAddresses;
use crate::query::{self, ChunkLimits, ShuttingDown};
use crate::security::{Permission, Principal, Security};
use crate::watch;

/// The `Deeb` gRPC service of one node.
#[derive(Clone, Debug)]
pub struct DeebService {
    handle: NodeHandle,
    /// One channel per node this one forwards to (the client crate's pool),
    /// made afresh when the security settings are read again.
    pool: Arc<Mutex<(u64, deeb_client::Pool)>>,
    security: Arc<Security>,
    limits: ChunkLimits,
    timeouts: QueryTimeouts,
    shutting_down: ShuttingDown,
    /// The members' client addresses, for status.
    client_addresses: ClientAddresses,
    metrics: Metrics,
    /// Where backups are copied before they stream, and how many may run.
    backups: (PathBuf, Arc<Semaphore>),
    /// How many change streams may be open (`None`: no change stream, the
    /// MySQL backend's entries hold statements, not row changes).
    watches: Option<Arc<Semaphore>>,
}

/// How long queries may run.
#[derive(Clone, Copy, Debug)]
pub struct QueryTimeouts {
    /// When the request does not say.
    pub default: Duration,
    /// The most a request may ask for.
    pub max: Duration,
}

impl QueryTimeouts {
    /// The time a query asking for `timeout_ms` (0: the default) may run.
    fn for_request(self, timeout_ms: u64) -> Duration {
        match timeout_ms {
            0 => self.default,
            ms => Duration::from_millis(ms).min(self.max),
        }
    }
}

impl DeebService {
    /// A service over the node behind `handle`; its running queries stop
    /// when `shutting_down` is set.
    pub fn new(
        handle: NodeHandle,
        (query_chunk_rows_max, query_chunk_bytes_max): (usize, usize),
        timeouts: QueryTimeouts,
        shutting_down: ShuttingDown,
        client_addresses: ClientAddresses,
        (security, metrics): (Arc<Security>, Metrics),
        (backup_dir, change_stream): (PathBuf, bool),
    ) -> Self {
        let backups = (backup_dir, Arc::new(Semaphore::new(BACKUPS_RUNNING_MAX)));
        let served_by = handle.id().0;
        let limits = ChunkLimits { rows_max: query_chunk_rows_max, bytes_max: query_chunk_bytes_max, served_by };
        let pool = Arc::new(Mutex::new((security.generation(), forwarding_pool(&security))));
        let watches = change_stream.then(|| Arc::new(Semaphore::new(watch::WATCHES_MAX)));
        Self { handle, pool, security, limits, timeouts, shutting_down, client_addresses, metrics, backups, watches }
    }

    /// This node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The metrics' text (the `status` permission), raft's state fresh
    /// from the node.
    ///
    /// # Errors
    /// Refused by the security checks, or the node does not answer.
    pub async fn metrics_text<T>(&self, request: &Request<T>) -> Result<String, Status> {
        self.security.admit(request, Permission::Status).await?;
        self.metrics.observe_status(&self.member_status().await?);
        Ok(self.metrics.encode())
    }

    /// This node's status with the members' addresses, for a caller with
    /// `permission` (an HTTP redirect needs the leader's address).
    ///
    /// # Errors
    /// Refused by the security checks, or the node does not answer.
    pub async fn cluster_view<T>(
        &self,
        request: &Request<T>,
        permission: Permission,
    ) -> Result<StatusResponse, Status> {
        self.security.admit(request, permission).await?;
        self.member_status().await
    }

    /// How clients reach the HTTP API: `https` with client TLS.
    pub fn http_scheme(&self) -> &'static str {
        if self.security.client_tls().is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Whether node `id` was heard over the peer link within `within`.
    pub fn heard_within(&self, id: u64, within: Duration) -> bool {
        id == self.handle.id().0 || self.client_addresses.heard_within(id, within)
    }

    /// Counts and times one call.
    async fn measured<T>(
        &self,
        (api, operation): (Api, &'static str),
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let timer = self.metrics.call(api, operation);
        let answer = call.await;
        timer.finish(answer.as_ref().err().map(Status::code));
        answer
    }

    /// This node's status for a readiness probe: the caller needs the
    /// `ready` permission (not `status`).
    ///
    /// # Errors
    /// Refused by the security checks, or the node does not answer.
    pub async fn ready_status<T>(&self, request: &Request<T>) -> Result<StatusResponse, Status> {
        self.security.admit(request, Permission::Ready).await?;
        self.member_status().await
    }

    /// This node's status, with each member's client address as heard.
    async fn member_status(&self) -> Result<StatusResponse, Status> {
        let status = self.handle.status().await.map_err(to_status)?;
        let mut response = status_response(&status);
        for member in &mut response.members {
            let advertised = self.client_addresses.get(member.node_id).unwrap_or_default();
            (member.client_address, member.http_address) = (advertised.client, advertised.http);
        }
        Ok(response)
    }

    /// Whether this node's event loop answers and a local `SELECT 1` runs
    /// (no quorum needed): the liveness probe. A node outside the
    /// configuration (removed, or not yet joined) serves no reads but is
    /// alive: restarting it would change nothing.
    ///
    /// # Errors
    /// The loop does not answer in time, or stopped, or the query failed.
    pub async fn local_status(&self) -> Result<(), String> {
        self.handle.status().await.map_err(|error| error.to_string())?;
        let local = Consistency::Stale { max_staleness: None };
        let reader = match self.handle.read(local).await {
            Ok(reader) => reader,
            Err(ServerError::Read(ReadError::NotMember { .. })) => return Ok(()),
            Err(error) => return Err(format!("local read: {error}")),
        };
        let (chunks, mut answers) = mpsc::channel(QUERY_CHUNKS_BUFFERED_MAX);
        let timeout = self.timeouts.default;
        query::spawn(reader, statement("SELECT 1"), self.limits, timeout, self.shutting_down.clone(), chunks);
        match answers.recv().await {
            Some(Ok(_)) => Ok(()),
            Some(Err(status)) => Err(format!("SELECT 1: {}", status.message())),
            None => Err("SELECT 1 gave no answer".into()),
        }
    }

    /// The pool of channels to other nodes, current with the TLS settings.
    fn pool(&self) -> deeb_client::Pool {
        let mut slot = self.pool.lock().expect("forwarding pool lock");
        let generation = self.security.generation();
        if slot.0 != generation {
            *slot = (generation, forwarding_pool(&self.security));
        }
        slot.1.clone()
    }

    async fn execute_once(
        &self,
        message: &ExecuteRequest,
        (forwarded_here, principal): (bool, &Principal),
    ) -> Result<ExecuteResponse, ServerError> {
        let key = Some(message.idempotency_key.clone()).filter(|key| !key.is_empty());
        let written = match &message.restore {
            // A piece that arrives twice changes nothing the second time.
            Some(part) => self.handle.restore_part(part.clone()).await,
            None => self.handle.write(message.statements.clone(), key).await,
        };
        match written {
            Ok(outcome) => {
                Ok(ExecuteResponse { results: outcome.results, served_by: self.handle.id().0, index: outcome.index.0 })
            }
            Err(ServerError::Write(WriteError::NotLeader { leader: Some(leader) })) if !forwarded_here => {
                let mut client = self.leader_client(leader).await?;
                let answer = self.bounded(client.execute(forwarded_for(message.clone(), principal))).await?;
                answer.map(Response::into_inner).map_err(|status| forward_failed(leader, status))
            }
            Err(error) => Err(error),
        }
    }

    async fn admin_once(
        &self,
        request: &AdminCall,
        (forwarded_here, principal): (bool, &Principal),
    ) -> Result<AdminResponse, ServerError> {
        let result = match request {
            AdminCall::Add(add) => self.handle.change_membership(vec![member_change(add)]).await,
            AdminCall::Remove(remove) => {
                self.handle.change_membership(vec![MemberChange::Remove { id: NodeId(remove.node_id) }]).await
            }
            AdminCall::Transfer(transfer) => self.handle.transfer_leader(NodeId(transfer.node_id)).await,
        };
        match result {
            Ok(()) => Ok(AdminResponse { served_by: self.handle.id().0 }),
            Err(ServerError::Admin(AdminError::NotLeader { leader: Some(leader) })) if !forwarded_here => {
                let mut client = self.leader_client(leader).await?;
                let answer = match request {
                    AdminCall::Add(add) => self.bounded(client.add_node(forwarded_for(add.clone(), principal))).await?,
                    AdminCall::Remove(remove) => {
                        self.bounded(client.remove_node(forwarded_for(*remove, principal))).await?
                    }
                    AdminCall::Transfer(transfer) => {
                        self.bounded(client.transfer_leader(forwarded_for(*transfer, principal))).await?
                    }
                };
                answer.map(Response::into_inner).map_err(|status| forward_failed(leader, status))
            }
            Err(error) => Err(error),
        }
    }

    async fn leader_client(
        &self,
        leader: NodeId,
    ) -> Result<deeb_proto::deeb_client::DeebClient<tonic::transport::Channel>, ServerError> {
        let address = self.handle.address(leader).await?;
        let address = address.ok_or_else(|| ServerError::NoLeader(format!("address of leader {leader} unknown")))?;
        self.pool()
            .client(&address)
            .map_err(|error| ServerError::NoLeader(format!("leader {leader} at {address}: {error}")))
    }

    /// Relays the leader's result stream for a lease read.
    async fn forward_query(
        &self,
        leader: NodeId,
        (message, principal): (QueryRequest, &Principal),
        chunks: query::ChunkSender,
    ) -> Result<(), ServerError> {
        let mut client = self.leader_client(leader).await?;
        let answer = self.bounded(client.query(forwarded_for(message, principal))).await?;
        let mut stream = answer.map_err(|status| forward_failed(leader, status))?.into_inner();
        tokio::spawn(async move {
            loop {
                let item = stream.message().await;
                let (item, end) = match item {
                    Ok(Some(chunk)) => (Ok(chunk), false),
                    Ok(None) => return,
                    Err(status) => (Err(status), true),
                };
                if chunks.send(item).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(())
    }

    /// Bounds a forwarded call by the request timeout.
    async fn bounded<T>(&self, call: impl Future<Output = T>) -> Result<T, ServerError> {
        let timeout = self.handle.request_timeout();
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        tokio::time::timeout(timeout, call).await.map_err(|_| ServerError::Timeout(timeout_ms))
    }

    /// Retries `attempt` while the cluster has no reachable leader, until
    /// the request timeout.
    async fn with_retry<T, F: Future<Output = Result<T, ServerError>>>(
        &self,
        mut attempt: impl FnMut() -> F,
    ) -> Result<T, ServerError> {
        let deadline = Instant::now() + self.handle.request_timeout();
        loop {
            match attempt().await {
                Err(error) if is_transient(&error) && Instant::now() + RETRY_PAUSE < deadline => {
                    tracing::debug!(%error, "retrying while no leader is reachable");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                result => return result,
            }
        }
    }
}

/// An admin call, for one retry/forward path.
enum AdminCall {
    Add(AddNodeRequest),
    Remove(RemoveNodeRequest),
    Transfer(TransferLeaderRequest),
}

#[tonic::async_trait]
impl Deeb for DeebService {
    async fn execute(&self, request: Request<ExecuteRequest>) -> Result<Response<ExecuteResponse>, Status> {
        self.measured((api_of(&request), "execute"), self.execute_call(request)).await
    }

    type QueryStream = ReceiverStream<Result<QueryChunk, Status>>;

    /// (Timed to its first answer: the rows stream after.)
    async fn query(&self, request: Request<QueryRequest>) -> Result<Response<Self::QueryStream>, Status> {
        self.metrics.read(request.get_ref().consistency());
        self.measured((api_of(&request), "query"), self.query_call(request)).await
    }

    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        self.measured((api_of(&request), "status"), self.status_call(request)).await
    }

    type BackupStream = ReceiverStream<Result<BackupChunk, Status>>;

    /// (Timed to its first answer: the file streams after.)
    async fn backup(&self, request: Request<BackupRequest>) -> Result<Response<Self::BackupStream>, Status> {
        self.measured((api_of(&request), "backup"), self.backup_call(request)).await
    }

    type WatchStream = ReceiverStream<Result<Change, Status>>;

    /// (Timed to its start: the changes stream after.)
    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        self.measured((api_of(&request), "watch"), self.watch_call(request)).await
    }

    async fn add_node(&self, request: Request<AddNodeRequest>) -> Result<Response<AdminResponse>, Status> {
        self.measured((api_of(&request), "add_node"), self.admin(request, AdminCall::Add)).await
    }

    async fn remove_node(&self, request: Request<RemoveNodeRequest>) -> Result<Response<AdminResponse>, Status> {
        self.measured((api_of(&request), "remove_node"), self.admin(request, AdminCall::Remove)).await
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<AdminResponse>, Status> {
        self.measured((api_of(&request), "transfer_leader"), self.admin(request, AdminCall::Transfer)).await
    }
}

/// Which API a request came through: the HTTP layer marks its own.
fn api_of<T>(request: &Request<T>) -> Api {
    if request.extensions().get::<Api>().is_some_and(|api| *api == Api::Http) {
        Api::Http
    } else if is_forwarded(request) {
        Api::Forwarded
    } else {
        Api::Grpc
    }
}

impl DeebService {
    async fn execute_call(&self, request: Request<ExecuteRequest>) -> Result<Response<ExecuteResponse>, Status> {
        let principal = self.security.admit(&request, Permission::Execute).await?;
        if request.get_ref().restore.is_some() {
            // Replacing the whole database is a restore's permission.
            self.security.admit(&request, Permission::Backup).await?;
            if !request.get_ref().statements.is_empty() {
                return Err(invalid("a restore piece comes without statements"));
            }
        }
        let forwarded_here = is_forwarded(&request);
        let message = request.into_inner();
        let answer = self.with_retry(|| self.execute_once(&message, (forwarded_here, &principal))).await;
        answer.map(Response::new).map_err(to_status)
    }

    async fn query_call(
        &self,
        request: Request<QueryRequest>,
    ) -> Result<Response<ReceiverStream<Result<QueryChunk, Status>>>, Status> {
        let principal = self.security.admit(&request, Permission::Query).await?;
        let forwarded_here = is_forwarded(&request);
        let message = request.into_inner();
        let statement = message.statement.clone().ok_or_else(|| invalid("a query needs a statement"))?;
        let (chunks, stream) = mpsc::channel(QUERY_CHUNKS_BUFFERED_MAX);
        match self.handle.read(consistency_of(&message)).await {
            Ok(reader) => {
                let timeout = self.timeouts.for_request(message.timeout_ms);
                query::spawn(reader, statement, self.limits, timeout, self.shutting_down.clone(), chunks)
            }
            Err(ServerError::Read(ReadError::NotLeader { leader: Some(leader) })) if !forwarded_here => {
                self.forward_query(leader, (message, &principal), chunks).await.map_err(to_status)?
            }
            Err(error) => return Err(to_status(error)),
        }
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn backup_call(
        &self,
        request: Request<BackupRequest>,
    ) -> Result<Response<ReceiverStream<Result<BackupChunk, Status>>>, Status> {
        self.security.admit(&request, Permission::Backup).await?;
        let consistency = match request.get_ref().consistency() {
            deeb_proto::Consistency::Linearizable => Consistency::Linearizable,
            deeb_proto::Consistency::Stale => Consistency::Stale { max_staleness: None },
            deeb_proto::Consistency::Lease => return Err(invalid("a backup is linearizable or stale, not lease")),
        };
        let format = deeb_proto::BackupFormat::try_from(request.get_ref().format)
            .map_err(|_| invalid("unknown backup format: sqlite or sql"))?;
        let (dir, running) = &self.backups;
        let Ok(running) = running.clone().try_acquire_owned() else {
            let message = format!("{BACKUPS_RUNNING_MAX} backups are running on this node already; retry later");
            return Err(Status::resource_exhausted(message));
        };
        let reader = self.handle.read(consistency).await.map_err(to_status)?;
        let (chunks, stream) = mpsc::channel(BACKUP_CHUNKS_BUFFERED_MAX);
        let served_by = self.handle.id().0;
        backup::spawn(reader, (dir.clone(), running), (served_by, format), BACKUP_CHUNK_BYTES, chunks);
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    /// A change stream reveals every row written: the `query` permission.
    async fn watch_call(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<ReceiverStream<Result<Change, Status>>>, Status> {
        self.security.admit(&request, Permission::Query).await?;
        let Some(watches) = &self.watches else {
            let refusal = "no change stream with the MySQL backend: its entries hold statements, not row changes";
            return Err(Status::failed_precondition(refusal));
        };
        let changes = watch::start(self.handle.clone(), request.get_ref(), watches).await?;
        Ok(Response::new(ReceiverStream::new(changes)))
    }

    /// Where `POST /db/load` writes a SQLite file it is given, and the
    /// permit it holds meanwhile (loads count among the backups).
    ///
    /// # Errors
    /// As many backups or loads as may run are running.
    pub fn scratch(&self) -> Result<(PathBuf, tokio::sync::OwnedSemaphorePermit), Status> {
        let (dir, running) = &self.backups;
        let Ok(running) = running.clone().try_acquire_owned() else {
            let message =
                format!("{BACKUPS_RUNNING_MAX} backups or loads are running on this node already; retry later");
            return Err(Status::resource_exhausted(message));
        };
        Ok((dir.clone(), running))
    }

    async fn status_call(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        self.security.admit(&request, Permission::Status).await?;
        let mut response = self.member_status().await?;
        if request.into_inner().with_digest {
            (response.digest_index, response.digest) = self.handle.digest().await.map_err(to_status)?;
        }
        Ok(Response::new(response))
    }

    async fn admin<T>(&self, request: Request<T>, wrap: fn(T) -> AdminCall) -> Result<Response<AdminResponse>, Status> {
        let principal = self.security.admit(&request, Permission::Membership).await?;
        let forwarded_here = is_forwarded(&request);
        let call = wrap(request.into_inner());
        let answer = self.with_retry(|| self.admin_once(&call, (forwarded_here, &principal))).await;
        answer.map(Response::new).map_err(to_status)
    }
}

fn forwarding_pool(security: &Security) -> deeb_client::Pool {
    deeb_client::Pool::new(crate::client::CONNECT_TIMEOUT, None).with_tls(security.peer_channel_tls())
}

/// Errors worth retrying inside the server: nothing was done, and a leader
/// may appear shortly.
fn is_transient(error: &ServerError) -> bool {
    match error {
        ServerError::Write(WriteError::NotLeader { leader: None }) => true,
        ServerError::Admin(AdminError::NotLeader { leader: None }) => true,
        ServerError::NoLeader(_) => true,
        // Only a leader's own "nothing done" answer: a call broken in flight
        // is also `Unavailable`, and retrying it could apply a write twice.
        ServerError::Forwarded(status) => {
            status.code() == tonic::Code::Unavailable && crate::errors::proves_not_applied(status)
        }
        _ => false,
    }
}

/// A forwarded call's failure. A leader this node could not even connect
/// to (refused: it died, and no new leader is known here yet) was never
/// sent the request, so that is retried like a missing leader; any other
/// failure is relayed as is.
fn forward_failed(leader: NodeId, status: Status) -> ServerError {
    if never_connected(&status) {
        return ServerError::NoLeader(format!("leader {leader} refused the connection: {}", status.message()));
    }
    ServerError::Forwarded(status)
}

/// True if `error` or one of its sources is a refused connection: an error
/// of `connect`, so nothing was sent.
fn never_connected(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        let refused = error.downcast_ref::<std::io::Error>();
        if refused.is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused) {
            return true;
        }
        cause = error.source();
    }
    false
}

fn invalid(what: &str) -> Status {
    to_status(ServerError::Invalid(what.to_owned()))
}

/// The core's consistency for a query request.
pub fn consistency_of(request: &QueryRequest) -> Consistency {
    match request.consistency() {
        deeb_proto::Consistency::Linearizable => Consistency::Linearizable,
        deeb_proto::Consistency::Lease => Consistency::Lease,
        deeb_proto::Consistency::Stale => {
            let bound = request.max_staleness_ms;
            Consistency::Stale { max_staleness: (bound > 0).then(|| Duration::from_millis(bound)) }
        }
    }
}

fn member_change(add: &AddNodeRequest) -> MemberChange {
    let (id, address) = (NodeId(add.node_id), add.address.clone());
    if add.promote {
        MemberChange::Promote { id }
    } else if add.learner {
        MemberChange::AddLearner { id, address }
    } else {
        MemberChange::AddVoter { id, address }
    }
}

/// The wire form of a node status.
pub fn status_response(status: &NodeStatus) -> StatusResponse {
    let members = status.members.iter().map(|member| MemberStatus {
        node_id: member.id.0,
        address: member.address.clone(),
        learner: member.learner,
        matched: member.matched.map_or(0, |index| index.0),
        next_index: 0,
        client_address: String::new(),
        http_address: String::new(),
    });
    StatusResponse {
        node_id: status.id.0,
        role: role_name(status.role).to_owned(),
        term: status.term.0,
        leader_id: status.leader.map_or(0, |id| id.0),
        commit_index: status.commit_index.0,
        applied_index: status.applied_index.0,
        members: members.collect(),
        ms_since_leader_contact: status
            .since_leader_contact
            .map_or(u64::MAX, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX)),
        snapshot_index: status.snapshot_index.0,
        digest: 0,
        digest_index: 0,
    }
}

/// The lowercase role name used in status reports.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::PreCandidate => "precandidate",
        Role::Leader => "leader",
    }
}

/// A statement without parameters (for the CLI and tests).
pub fn statement(sql: &str) -> Statement {
    Statement { sql: sql.to_owned(), params: Vec::new(), named_params: Vec::new() }
}

/// Backups running at once on one node (each holds a blocking thread and
/// a copy of the database on disk).
const BACKUPS_RUNNING_MAX: usize = 2;
/// A backup's chunks, and how many wait between the file and the client.
const BACKUP_CHUNK_BYTES: usize = 1 << 20;
const BACKUP_CHUNKS_BUFFERED_MAX: usize = 4;

/// Result chunks buffered per query between the reader and the client.
const QUERY_CHUNKS_BUFFERED_MAX: usize = 4;
/// Pause between retries while no leader is known.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use deeb_proto::ExecuteRequest;
    use tokio::io::AsyncReadExt;

    use super::{forward_failed, statement, NodeId, ServerError};

    async fn execute_at(address: &str) -> tonic::Status {
        let pool = deeb_client::Pool::new(Duration::from_secs(2), None);
        let mut client = pool.client(address).expect("pooled client");
        let request = ExecuteRequest { statements: vec![statement("SELECT 1")], ..Default::default() };
        client.execute(request).await.expect_err("nothing serves there")
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried_and_a_broken_call_is_relayed() {
        // Nothing listens: the request was never sent, so it may go again.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = closed.local_addr().expect("address").to_string();
        drop(closed);
        let refused = execute_at(&address).await;
        assert!(matches!(forward_failed(NodeId(1), refused), ServerError::NoLeader(_)));

        // A peer that accepts and drops each connection unanswered: the
        // request may have reached it, so the failure is relayed as is.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let dropper = tokio::spawn(async move {
            for _ in 0..8 {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let mut buffer = [0u8; 64];
                let _ = socket.read(&mut buffer).await;
            }
        });
        let broken = execute_at(&address).await;
        assert!(matches!(forward_failed(NodeId(1), broken), ServerError::Forwarded(_)));
        dropper.abort();
    }
}
