//! deeb's Rust client.
//!
//! A [`Client`] talks to a cluster through any of its nodes: it sends writes
//! straight to the leader it learns from a node's status (and follows it
//! when it moves), keeps one pooled connection per node ([`Pool`], which the
//! server's own forwarding uses too), gives every write an idempotency key
//! and retries it while the outcome is unknown, and streams query rows as
//! they arrive ([`Rows`]). Errors carry deeb's stable codes ([`Error`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), deeb_client::Error> {
//! use deeb_client::{Client, Options, Value};
//! let client = Client::new(&["127.0.0.1:7001", "127.0.0.1:7002"], Options::default());
//! client.execute_sql("CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT)").await?;
//! client.execute("INSERT INTO kv VALUES (?, ?)", &[Value::Integer(1), Value::Text("one".into())]).await?;
//! let mut rows = client.query("SELECT k, v FROM kv", &[]).await?;
//! while let Some(row) = rows.next().await? {
//!     println!("{:?}", row);
//! }
//! # Ok(())
//! # }
//! ```

mod error;
mod pool;
mod rows;
mod value;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deeb_proto::{
    BackupRequest, ErrorCode, ExecuteRequest, ExecuteResponse, QueryRequest, Statement, StatusRequest, StatusResponse,
    WatchRequest,
};
use tonic::metadata::MetadataValue;

pub use error::{detail_of, Error};
pub use pool::{tls_endpoint, uri_of, with_message_limits, Pool, TlsConfig};
pub use rows::Rows;
pub use value::Value;

/// The gRPC client type the pool hands out.
pub type GrpcClient = deeb_proto::deeb_client::DeebClient<tonic::transport::Channel>;

/// How a [`Client`] connects and retries.
#[derive(Clone)]
pub struct Options {
    /// Bound on opening a connection to one node.
    pub connect_timeout: Duration,
    /// How long a write is retried (with its idempotency key) while its
    /// outcome is unknown or no leader is known.
    pub retry_budget: Duration,
    /// Read consistency of [`Client::query`].
    pub consistency: deeb_proto::Consistency,
    /// How long a query may run (`None`: the server's default).
    pub query_timeout: Option<Duration>,
    /// Connect over TLS (https) with these settings: the CA to trust and,
    /// for nodes that require one, a client certificate.
    pub tls: Option<TlsConfig>,
    /// Called on every endpoint before it connects (timeouts, keep-alive).
    pub endpoint_hook: Option<Arc<dyn Fn(tonic::transport::Endpoint) -> tonic::transport::Endpoint + Send + Sync>>,
    /// Sent as the `authorization` metadata of every call (credentials,
    /// for when nodes check them).
    pub authorization: Option<String>,
    /// Send writes to the leader directly (learned from a node's status).
    /// Off, they go to the first node, which forwards them.
    pub follow_leader: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(3),
            retry_budget: Duration::from_secs(5),
            consistency: deeb_proto::Consistency::Linearizable,
            query_timeout: None,
            tls: None,
            endpoint_hook: None,
            authorization: None,
            follow_leader: true,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Options")
            .field("connect_timeout", &self.connect_timeout)
            .field("retry_budget", &self.retry_budget)
            .field("consistency", &self.consistency)
            .field("query_timeout", &self.query_timeout)
            .field("tls", &self.tls.is_some())
            .field("endpoint_hook", &self.endpoint_hook.is_some())
            .field("authorization", &self.authorization.as_ref().map(|_| "<set>"))
            .field("follow_leader", &self.follow_leader)
            .finish()
    }
}

/// A connection to a deeb cluster (cheap to clone; clones share the pool).
#[derive(Clone, Debug)]
pub struct Client {
    nodes: Arc<Vec<String>>,
    pool: Pool,
    options: Options,
    /// The leader's address, as last learned.
    leader: Arc<Mutex<Option<String>>>,
}

impl Client {
    /// A client of the cluster reachable at `nodes` (any of them; more are
    /// learned from the cluster's member list). Connects lazily.
    pub fn new(nodes: &[&str], options: Options) -> Client {
        let pool = Pool::new(options.connect_timeout, options.endpoint_hook.clone()).with_tls(options.tls.clone());
        Client {
            nodes: Arc::new(nodes.iter().map(|node| (*node).to_owned()).collect()),
            pool,
            options,
            leader: Arc::new(Mutex::new(None)),
        }
    }

    /// The connection pool (one channel per node).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs one write statement with parameters; see [`Client::execute_request`].
    ///
    /// # Errors
    /// The request's error, once it is definite or the retry budget is spent.
    pub async fn execute(&self, sql: &str, params: &[Value]) -> Result<ExecuteResponse, Error> {
        self.execute_statements(vec![value::statement(sql, params)]).await
    }

    /// Runs one write statement without parameters.
    ///
    /// # Errors
    /// As [`Client::execute`].
    pub async fn execute_sql(&self, sql: &str) -> Result<ExecuteResponse, Error> {
        self.execute(sql, &[]).await
    }

    /// Runs statements as one atomic request.
    ///
    /// # Errors
    /// As [`Client::execute`].
    pub async fn execute_statements(&self, statements: Vec<Statement>) -> Result<ExecuteResponse, Error> {
        let request = ExecuteRequest { statements, idempotency_key: new_idempotency_key(), restore: None };
        self.execute_request(request).await
    }

    /// Sends a write request to the leader (any node forwards it too) and,
    /// while its outcome is unknown (a broken connection, a leader change,
    /// the request's timeout) or no leader is known, sends it again with
    /// the same idempotency key, to the leader as it now knows it: a retry
    /// of a request that was applied gets the first answer, so it is never
    /// applied twice. Definite answers (results, SQL errors, limits) come
    /// back at once. A request without a key gets one.
    ///
    /// # Errors
    /// The last error, when it is definite or the retry budget is spent.
    pub async fn execute_request(&self, mut request: ExecuteRequest) -> Result<ExecuteResponse, Error> {
        if request.idempotency_key.is_empty() {
            request.idempotency_key = new_idempotency_key();
        }
        let started = tokio::time::Instant::now();
        let mut wait = Duration::from_millis(50);
        // After a connection failure the retries go through the nodes this
        // client was given, in turn (they forward to the leader): the
        // leader's advertised address may be what cannot be reached.
        let mut through_given: Option<usize> = None;
        loop {
            let address = match through_given {
                Some(turn) if !self.nodes.is_empty() => self.nodes[turn % self.nodes.len()].clone(),
                _ => self.write_address().await,
            };
            let mut client = self.pool.client(&address)?;
            let answer = client.execute(self.request(request.clone())).await;
            match answer {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => {
                    let error = Error::from(status);
                    if !error.worth_retrying() || started.elapsed() + wait >= self.options.retry_budget {
                        return Err(error);
                    }
                    tracing::debug!(%address, %error, "retrying the write with its idempotency key");
                    self.forget_leader();
                    if error.error_code.is_none() {
                        through_given = Some(through_given.map_or(0, |turn| turn + 1));
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Runs a query on one of the nodes and streams its rows.
    ///
    /// # Errors
    /// The query's error (also mid-stream, from [`Rows::next`]).
    pub async fn query(&self, sql: &str, params: &[Value]) -> Result<Rows, Error> {
        let millis = |bound: Duration| u64::try_from(bound.as_millis()).unwrap_or(u64::MAX).max(1);
        let request = QueryRequest {
            statement: Some(value::statement(sql, params)),
            consistency: self.options.consistency as i32,
            max_staleness_ms: 0,
            timeout_ms: self.options.query_timeout.map_or(0, millis),
        };
        self.query_request(request).await
    }

    /// Sends a query request as is to the first node that answers.
    ///
    /// # Errors
    /// The query's error.
    pub async fn query_request(&self, request: QueryRequest) -> Result<Rows, Error> {
        let mut last = None;
        for address in self.nodes.iter() {
            let mut client = self.pool.client(address)?;
            match client.query(self.request(request.clone())).await {
                Ok(response) => return Ok(Rows::new(response.into_inner())),
                // No node answered: try the next one.
                Err(status) if detail_of(&status).is_none() => last = Some(Error::from(status)),
                Err(status) => return Err(Error::from(status)),
            }
        }
        Err(last.unwrap_or_else(|| Error::transport("no node addresses given")))
    }

    /// A consistent copy of the whole database, taken on the first node
    /// that answers: the first chunk carries the header (applied index,
    /// size, CRC32C), then the file's bytes follow in order.
    ///
    /// # Errors
    /// No node answered, or the node refused.
    pub async fn backup(&self, request: BackupRequest) -> Result<tonic::Streaming<deeb_proto::BackupChunk>, Error> {
        self.first_answering(|mut client| {
            let request = self.request(request);
            async move { client.backup(request).await }
        })
        .await
    }

    /// The change stream (`Watch`) from the first given node that answers:
    /// every committed row change from `request.from_index` on, in log
    /// order, following new writes until dropped. Resume after a broken
    /// stream from the last index seen: changes come at least once, and
    /// (index, request, position) names each one.
    ///
    /// # Errors
    /// No node answered, or the node refused (ERROR_CODE_COMPACTED: the
    /// index is no longer in the log).
    pub async fn watch(&self, request: WatchRequest) -> Result<tonic::Streaming<deeb_proto::Change>, Error> {
        self.first_answering(|mut client| {
            let request = self.request(request.clone());
            async move { client.watch(request).await }
        })
        .await
    }

    /// A streaming call to each given node in turn, until one answers.
    async fn first_answering<T, Call, Answer>(&self, call: Call) -> Result<T, Error>
    where
        Call: Fn(GrpcClient) -> Answer,
        Answer: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut last = None;
        for address in self.nodes.iter() {
            match call(self.pool.client(address)?).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if detail_of(&status).is_none() && status.code() == tonic::Code::Unavailable => {
                    last = Some(Error::from(status));
                }
                Err(status) => return Err(Error::from(status)),
            }
        }
        Err(last.unwrap_or_else(|| Error::transport("no node addresses given")))
    }

    /// The addresses this client was given.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The status of the node at `address`.
    ///
    /// # Errors
    /// The node could not be reached or failed.
    pub async fn status(&self, address: &str) -> Result<StatusResponse, Error> {
        let mut client = self.pool.client(address)?;
        Ok(client.status(self.request(StatusRequest::default())).await?.into_inner())
    }

    /// Where writes go: the leader if known, else the first node that
    /// reports one (learning its client address from the member list), else the
    /// first node (which forwards, or answers that there is no leader).
    async fn write_address(&self) -> String {
        if !self.options.follow_leader {
            return self.nodes.first().cloned().unwrap_or_default();
        }
        if let Some(leader) = self.leader.lock().expect("leader lock").clone() {
            return leader;
        }
        for address in self.nodes.iter() {
            let Ok(status) = self.status(address).await else { continue };
            let leader =
                status.members.iter().find(|member| member.node_id == status.leader_id && status.leader_id != 0);
            // Its client listener's address; its peer listener (`address`)
            // is for nodes.
            if let Some(member) = leader.filter(|member| !member.client_address.is_empty()) {
                *self.leader.lock().expect("leader lock") = Some(member.client_address.clone());
                return member.client_address.clone();
            }
        }
        self.nodes.first().cloned().unwrap_or_default()
    }

    fn forget_leader(&self) {
        *self.leader.lock().expect("leader lock") = None;
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = self.options.authorization.as_deref().and_then(|text| MetadataValue::try_from(text).ok()) {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }
}

impl Error {
    /// True for a write's failure that a retry with the same key may fix.
    pub fn worth_retrying(&self) -> bool {
        match self.error_code {
            // No node answered (connection refused or broken): unknown.
            None => true,
            Some(ErrorCode::OutcomeUnknown | ErrorCode::Unavailable | ErrorCode::Overloaded) => true,
            // The request's own timeout (not a statement's deadline).
            Some(ErrorCode::Timeout) => !self.not_applied,
            Some(_) => false,
        }
    }
}

/// A key no other request has: this process, the time, a counter.
pub fn new_idempotency_key() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("deeb-client-{}-{nanos:x}-{count}", std::process::id())
}

/// The largest message a client sends or accepts (deeb's own clients: the
/// CLI, the shell, a node forwarding to its leader): every response a node
/// makes fits (`message_limits_are_symmetric` in the server checks it).
pub const MESSAGE_BYTES_MAX: usize = 64 << 20;
