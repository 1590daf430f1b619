//! Simulated clients: register reads, writes and compare-and-set on a
//! key-value table, bank transfers and total reads, and set inserts. Every
//! invocation and completion is recorded with simulated time; a request that
//! timed out or failed in a way that does not prove it never happened is
//! indeterminate. The SQL workload (`sql`) runs among them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deeb_proto::deeb_client::DeebClient;
use deeb_proto::{value, Consistency, ExecuteRequest, ExecuteResponse, QueryRequest, Statement, Value};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tonic::transport::Channel;

use super::cluster::NO_RESTART_YET;
use crate::checker::history::{Kind, Operation};

mod sql;

pub use sql::read_sql_final;

/// Keys of the register workload: few, so operations contend.
pub const KEYS: u64 = 8;
/// Bank accounts and the balance each starts with.
pub const ACCOUNTS: u64 = 4;
pub const INITIAL_BALANCE: i64 = 100;

/// Statements that create the workload's tables and initial rows.
pub fn setup_statements() -> Vec<Statement> {
    let mut statements = vec![
        plain("CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER)"),
        plain("CREATE TABLE bank (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)"),
        plain("CREATE TABLE items (v INTEGER)"),
        plain("CREATE TABLE noise (id INTEGER PRIMARY KEY AUTOINCREMENT, r INTEGER)"),
    ];
    statements.extend(sql::setup_statements());
    for account in 0..ACCOUNTS {
        statements.push(statement(
            "INSERT INTO bank (id, balance) VALUES (?, ?)",
            vec![integer(account as i64), integer(INITIAL_BALANCE)],
        ));
    }
    statements
}

/// The shared history of one run.
pub struct Recorder {
    start: Instant,
    operations: Mutex<Vec<Operation>>,
    /// Canary mutant: corrupt the next successful register read.
    canary: AtomicBool,
    /// Parent ids of the SQL workload believed present, shared by the clients.
    parents: Mutex<Vec<i64>>,
}

impl Recorder {
    pub fn new(canary: bool) -> Self {
        Self {
            start: Instant::now(),
            operations: Mutex::new(Vec::new()),
            canary: AtomicBool::new(canary),
            parents: Mutex::new(Vec::new()),
        }
    }

    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn record(&self, operation: Operation) {
        self.operations.lock().expect("recorder lock").push(operation);
    }

    pub fn operations(&self) -> Vec<Operation> {
        self.operations.lock().expect("recorder lock").clone()
    }

    /// Flips the observed value once, if the canary is armed.
    fn canary(&self, observed: Option<Option<i64>>) -> Option<Option<i64>> {
        match observed {
            Some(Some(value)) if self.canary.swap(false, Ordering::SeqCst) => Some(Some(value ^ CANARY_FLIP)),
            other => other,
        }
    }
}

/// One simulated client, looping until `stop`.
pub struct Client {
    pub id: u64,
    pub addresses: Vec<String>,
    pub recorder: Arc<Recorder>,
    pub stop: Arc<AtomicBool>,
    pub rng: SmallRng,
    channels: BTreeMap<String, DeebClient<Channel>>,
    /// Addresses that timed out recently, until when to avoid them.
    suspect_until: BTreeMap<String, Duration>,
    counter: i64,
    /// Large rows this client inserted and has not deleted yet.
    blobs: Vec<i64>,
    /// Half the register reads are lease reads (see `Swarm::lease_reads`).
    pub lease_reads: bool,
    /// With `Some(drift)`, a share of register reads are bounded-stale
    /// reads (see `Swarm::stale_reads`); the nodes' clocks run at no less
    /// than `1 - drift`.
    pub stale_reads: Option<f64>,
    /// Sends most operations to one node, as an application holding a
    /// connection does: the node this names by its place in `addresses`,
    /// the one that restarted last (a balancer gives new connections to
    /// the node with the fewest, and a restarted node has none), or before
    /// any restart its `id`-th. So a node that just restarted meets many
    /// requests at once (see `Swarm::late_across_restarts`).
    pub sticky: Option<Arc<StickyHomes>>,
}

/// Where sticky clients go (see `Client::sticky`), kept by the harness.
#[derive(Debug)]
pub struct StickyHomes {
    /// The place in `addresses` of the member that restarted last, or
    /// `NO_RESTART_YET`.
    pub restarted_last: AtomicUsize,
    /// The places of removed nodes, one bit each.
    pub removed: AtomicU64,
}

impl Client {
    pub fn new(id: u64, seed: u64, addresses: Vec<String>, recorder: Arc<Recorder>, stop: Arc<AtomicBool>) -> Self {
        let rng = SmallRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9).wrapping_add(id));
        Self {
            id,
            addresses,
            recorder,
            stop,
            rng,
            channels: BTreeMap::new(),
            suspect_until: BTreeMap::new(),
            counter: 0,
            blobs: Vec::new(),
            lease_reads: false,
            stale_reads: None,
            sticky: None,
        }
    }

    /// Runs operations until told to stop; every operation is bounded.
    pub async fn run(mut self) {
        for _ in 0..OPERATIONS_PER_CLIENT_MAX {
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            self.one_operation().await;
            let pause = Duration::from_millis(self.rng.gen_range(5..40));
            tokio::time::sleep(pause).await;
        }
    }

    async fn one_operation(&mut self) {
        if self.rng.gen_range(0..100) < SQL_PERCENT {
            return self.sql_operation().await;
        }
        let choice = self.rng.gen_range(0..100);
        match choice {
            0..=24 => self.register_write().await,
            25..=54 => self.register_read().await,
            55..=69 => self.compare_and_set().await,
            70..=79 => self.transfer().await,
            80..=87 => self.bank_read().await,
            88..=95 => self.set_insert().await,
            _ => self.noise().await,
        }
    }

    fn unique_value(&mut self) -> i64 {
        self.counter += 1;
        ((self.id as i64) << 32) | self.counter
    }

    async fn register_write(&mut self) {
        let key = self.rng.gen_range(0..KEYS);
        let value = self.unique_value();
        let sql = "INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v";
        let invoked = self.recorder.now();
        let result = self.execute(vec![statement(sql, vec![integer(key as i64), integer(value)])]).await;
        if result == Err(Failure::NotApplied) {
            return; // Provably no effect: not part of the history.
        }
        let completed = result.ok().map(|_| self.recorder.now());
        self.record(invoked, completed, Kind::Write { key, value });
    }

    async fn register_read(&mut self) {
        let key = self.rng.gen_range(0..KEYS);
        let stale_bound = match self.stale_reads {
            // Log-uniform: small bounds are the demanding ones.
            Some(_) if self.rng.gen_bool(STALE_READ_SHARE) => {
                let millis = (self.rng.gen_range(STALE_BOUND_LN_SECS).exp() * 1_000.0).round() as u64;
                Some(Duration::from_millis(millis.max(1)))
            }
            _ => None,
        };
        // A lease read promises what a linearizable one does.
        let consistency = if stale_bound.is_some() {
            Consistency::Stale
        } else if self.lease_reads && self.rng.gen_bool(0.5) {
            Consistency::Lease
        } else {
            Consistency::Linearizable
        };
        let invoked = self.recorder.now();
        let read = statement("SELECT v FROM kv WHERE k = ?", vec![integer(key as i64)]);
        let rows = self.query_at(read, consistency, stale_bound).await;
        let observed = rows.map(|rows| rows.first().and_then(|row| row.first().copied().flatten()));
        let observed = self.recorder.canary(observed);
        let completed = observed.map(|_| self.recorder.now());
        let kind = match (stale_bound, self.stale_reads) {
            (Some(bound), Some(drift)) => Kind::StaleRead { key, observed, allowed: stale_allowance(bound, drift) },
            _ => Kind::Read { key, observed },
        };
        self.record(invoked, completed, kind);
    }

    async fn compare_and_set(&mut self) {
        let key = self.rng.gen_range(0..KEYS);
        let expected = self.recent_value(key).await;
        let Some(expected) = expected else { return };
        let new = self.unique_value();
        let sql = "UPDATE kv SET v = ? WHERE k = ? AND v = ?";
        let invoked = self.recorder.now();
        let params = vec![integer(new), integer(key as i64), integer(expected)];
        let result = self.execute(vec![statement(sql, params)]).await;
        if result == Err(Failure::NotApplied) {
            return;
        }
        let succeeded = result.ok().map(|rows| rows.first().copied().unwrap_or(0) == 1);
        let completed = succeeded.map(|_| self.recorder.now());
        self.record(invoked, completed, Kind::CompareAndSet { key, expected, new, succeeded });
    }

    /// A value the key held recently (from a read), to make CAS succeed often.
    async fn recent_value(&mut self, key: u64) -> Option<i64> {
        let invoked = self.recorder.now();
        let rows = self.query(statement("SELECT v FROM kv WHERE k = ?", vec![integer(key as i64)])).await;
        let observed = rows.map(|rows| rows.first().and_then(|row| row.first().copied().flatten()));
        let completed = observed.map(|_| self.recorder.now());
        self.record(invoked, completed, Kind::Read { key, observed });
        observed.flatten()
    }

    async fn transfer(&mut self) {
        let from = self.rng.gen_range(0..ACCOUNTS);
        let to = (from + self.rng.gen_range(1..ACCOUNTS)) % ACCOUNTS;
        let amount = self.rng.gen_range(1..10);
        let statements = vec![
            statement(
                "UPDATE bank SET balance = balance - ? WHERE id = ?",
                vec![integer(amount), integer(from as i64)],
            ),
            statement("UPDATE bank SET balance = balance + ? WHERE id = ?", vec![integer(amount), integer(to as i64)]),
        ];
        let invoked = self.recorder.now();
        let result = self.execute(statements).await;
        if result == Err(Failure::NotApplied) {
            return;
        }
        let succeeded = result.ok().map(|_| true);
        let completed = succeeded.map(|_| self.recorder.now());
        self.record(invoked, completed, Kind::Transfer { from, to, amount, succeeded });
    }

    async fn bank_read(&mut self) {
        let invoked = self.recorder.now();
        let rows = self.query(plain("SELECT sum(balance) FROM bank")).await;
        let total = rows.and_then(|rows| rows.first().and_then(|row| row.first().copied().flatten()));
        let completed = total.map(|_| self.recorder.now());
        self.record(invoked, completed, Kind::BankRead { total });
    }

    async fn set_insert(&mut self) {
        let value = self.unique_value();
        let invoked = self.recorder.now();
        let result = self.execute(vec![statement("INSERT INTO items (v) VALUES (?)", vec![integer(value)])]).await;
        let acknowledged = result.is_ok();
        let completed = acknowledged.then(|| self.recorder.now());
        self.record(invoked, completed, Kind::SetInsert { value, acknowledged });
    }

    /// Parameterless non-deterministic SQL (what row-change capture makes
    /// safe); not checked itself, it shows up in the replica digests.
    async fn noise(&mut self) {
        let _ = self.execute(vec![plain("INSERT INTO noise (r) VALUES (random())")]).await;
    }

    fn record(&self, invoked: Duration, completed: Option<Duration>, kind: Kind) {
        self.recorder.record(Operation { client: self.id, invoked, completed, kind });
    }

    /// A random node (or a sticky client's own), avoiding ones that timed
    /// out or failed a read recently (as a real client fails over), unless
    /// all did.
    fn pick_address(&mut self) -> String {
        let now = self.recorder.now();
        let healthy: Vec<&String> = self
            .addresses
            .iter()
            .filter(|address| self.suspect_until.get(*address).is_none_or(|&until| until <= now))
            .collect();
        if let Some(homes) = &self.sticky {
            if self.rng.gen_bool(STICKY_SHARE) {
                let home = match homes.restarted_last.load(Ordering::SeqCst) {
                    place if place != NO_RESTART_YET && self.id % 2 == 0 => place,
                    _ => self.id as usize,
                } % self.addresses.len();
                // Not a removed node, nor one that failed it lately: then
                // elsewhere, as an application's pool would (seeds 110003259
                // and 464445723: both clients of a two-client seed stuck to a
                // removed node, one that never learned of its removal and
                // answered each request only at its timeout).
                let removed = homes.removed.load(Ordering::SeqCst) & (1 << home.min(63)) != 0;
                let address = &self.addresses[home];
                if !removed && healthy.contains(&address) {
                    return address.clone();
                }
            }
        }
        let choices = if healthy.is_empty() { self.addresses.iter().collect() } else { healthy };
        choices[self.rng.gen_range(0..choices.len())].clone()
    }

    /// A sticky client also avoids a node that answered with an error (a
    /// removed node that never learned it was removed answers every request
    /// at its timeout: seed 464445723), as an application's pool would.
    /// (Other clients keep to the older rule, so their seeds run as before.)
    fn suspect_if_sticky(&mut self, address: &str) {
        if self.sticky.is_some() {
            self.suspect(address);
        }
    }

    fn suspect(&mut self, address: &str) {
        self.suspect_until.insert(address.to_owned(), self.recorder.now() + SUSPECT_AFTER_TIMEOUT);
    }

    async fn client_for(&mut self, address: &str) -> Option<DeebClient<Channel>> {
        if let Some(client) = self.channels.get(address) {
            return Some(client.clone());
        }
        let client = connect_within(address, OPERATION_TIMEOUT).await?;
        self.channels.insert(address.to_owned(), client.clone());
        Some(client)
    }

    /// Runs a write; `Ok` with rows affected per statement. A statement
    /// error counts as not applied.
    async fn execute(&mut self, statements: Vec<Statement>) -> Result<Vec<u64>, Failure> {
        match self.execute_response(statements).await {
            Ok(response) => Ok(response.results.iter().map(|r| r.rows_affected).collect()),
            Err(Failure::Statement(_)) => Err(Failure::NotApplied),
            Err(failure) => Err(failure),
        }
    }

    /// Runs a write with an idempotency key; while its outcome is unknown
    /// it is sent again (with the same key, to any node) a few times, as
    /// the client crate does: a retry of a write that was applied must get
    /// the first answer and apply nothing. `Ok` with the whole response.
    async fn execute_response(&mut self, statements: Vec<Statement>) -> Result<ExecuteResponse, Failure> {
        self.counter += 1;
        let idempotency_key = format!("sim-{}-{}", self.id, self.counter);
        let request = ExecuteRequest { statements, idempotency_key, restore: None };
        let first = self.execute_once(request.clone()).await;
        if first != Err(Failure::Unknown) {
            return first;
        }
        for _ in 0..WRITE_RETRIES {
            match self.execute_once(request.clone()).await {
                // This attempt did nothing; the first may still have.
                Err(Failure::NotApplied | Failure::Unknown) => {}
                definite => return definite,
            }
        }
        Err(Failure::Unknown)
    }

    /// One attempt of a write request.
    async fn execute_once(&mut self, request: ExecuteRequest) -> Result<ExecuteResponse, Failure> {
        let address = self.pick_address();
        let mut client = self.client_for(&address).await.ok_or(Failure::NotApplied)?;
        let call = client.execute(request);
        match tokio::time::timeout(OPERATION_TIMEOUT, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) if is_statement_failure(&status) => Err(Failure::Statement(status.message().to_owned())),
            Ok(Err(status)) => {
                self.suspect_if_sticky(&address);
                match deeb_server::errors::proves_not_applied(&status) {
                    true => Err(Failure::NotApplied),
                    false => Err(Failure::Unknown),
                }
            }
            Err(_) => {
                self.suspect(&address);
                Err(Failure::Unknown)
            }
        }
    }

    /// Runs a linearizable query; `Some(rows)` of integer-or-NULL columns.
    async fn query(&mut self, statement: Statement) -> Option<Rows> {
        self.query_at(statement, Consistency::Linearizable, None).await
    }

    /// Runs a query at `consistency` (and staleness bound, for stale
    /// reads); `Some(rows)` of integer-or-NULL columns.
    async fn query_at(
        &mut self,
        statement: Statement,
        consistency: Consistency,
        max_staleness: Option<Duration>,
    ) -> Option<Rows> {
        let address = self.pick_address();
        let mut client = self.client_for(&address).await?;
        let rows = query_rows(&mut client, statement, consistency, max_staleness).await;
        if matches!(rows, Ok(None)) {
            self.suspect_if_sticky(&address);
        }
        if rows.is_err() {
            self.suspect(&address);
        }
        rows.ok().flatten()
    }
}

/// True if the request's own SQL failed on the leader (so it did nothing,
/// and, as the leader ran it only after applying its whole log, an earlier
/// attempt of it cannot commit any more either).
fn is_statement_failure(status: &tonic::Status) -> bool {
    use deeb_proto::ErrorCode;
    let Some(detail) = deeb_server::errors::detail_of(status) else { return false };
    match detail.code() {
        ErrorCode::Sql | ErrorCode::Constraint | ErrorCode::Refused | ErrorCode::Limit => detail.not_applied,
        // A statement's deadline (a request's own timeout is not "not applied").
        ErrorCode::Timeout => detail.not_applied,
        _ => false,
    }
}

/// Attempts after the first of a write whose outcome is unknown.
const WRITE_RETRIES: usize = 2;

/// Why a write failed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Failure {
    /// Provably no effect: never sent, or the server said so.
    NotApplied,
    /// The request's own SQL failed (the server said so): no effect.
    Statement(String),
    /// Timed out or broke in flight: it may have happened.
    Unknown,
}

/// The final read of the set table, retried until it succeeds (bounded).
pub async fn read_set(addresses: &[String]) -> Option<Vec<i64>> {
    for attempt in 0..FINAL_READ_ATTEMPTS {
        let address = &addresses[attempt % addresses.len()];
        let Some(mut client) = connect_within(address, OPERATION_TIMEOUT).await else {
            continue;
        };
        if let Ok(Some(rows)) = linearizable_rows(&mut client, plain("SELECT v FROM items")).await {
            return Some(rows.into_iter().filter_map(|row| row.first().copied().flatten()).collect());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Runs setup statements until one attempt succeeds (bounded).
pub async fn setup(addresses: &[String]) -> bool {
    for attempt in 0..FINAL_READ_ATTEMPTS {
        let address = &addresses[attempt % addresses.len()];
        if let Some(mut client) = connect_within(address, OPERATION_TIMEOUT).await {
            let call = client.execute(ExecuteRequest { statements: setup_statements(), ..Default::default() });
            match tokio::time::timeout(OPERATION_TIMEOUT, call).await {
                Ok(Ok(_)) => return true,
                Ok(Err(status)) if status.message().contains("already exists") => return true,
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// A client connection to `address`, or `None` if it cannot be had within
/// `bound`.
pub async fn connect_within(address: &str, bound: Duration) -> Option<DeebClient<Channel>> {
    tokio::time::timeout(bound, deeb_server::client::connect(&deeb_server::security::Security::open(), address))
        .await
        .ok()?
        .ok()
}

/// Rows of integer-or-NULL columns.
type Rows = Vec<Vec<Option<i64>>>;

/// Runs a linearizable query and collects its rows: `Err` if it timed out
/// (the node may be down), `Ok(None)` if it failed.
async fn linearizable_rows(
    client: &mut DeebClient<Channel>,
    statement: Statement,
) -> Result<Option<Rows>, tokio::time::error::Elapsed> {
    query_rows(client, statement, Consistency::Linearizable, None).await
}

/// Runs a query at `consistency` and collects its rows, as
/// [`linearizable_rows`].
async fn query_rows(
    client: &mut DeebClient<Channel>,
    statement: Statement,
    consistency: Consistency,
    max_staleness: Option<Duration>,
) -> Result<Option<Rows>, tokio::time::error::Elapsed> {
    let request = QueryRequest {
        statement: Some(statement),
        consistency: consistency as i32,
        max_staleness_ms: max_staleness.map_or(0, |bound| bound.as_millis() as u64),
        timeout_ms: 0,
    };
    let collect = async {
        let mut stream = client.query(request).await.ok()?.into_inner();
        let mut rows = Vec::new();
        while let Some(chunk) = stream.message().await.ok()? {
            rows.extend(chunk.rows.into_iter().map(|row| row.values.iter().map(integer_of).collect()));
        }
        Some(rows)
    };
    tokio::time::timeout(OPERATION_TIMEOUT, collect).await
}

fn integer_of(value: &Value) -> Option<i64> {
    match value.kind {
        Some(value::Kind::Integer(integer)) => Some(integer),
        _ => None,
    }
}

pub fn plain(sql: &str) -> Statement {
    statement(sql, Vec::new())
}

pub fn statement(sql: &str, params: Vec<Value>) -> Statement {
    Statement { sql: sql.to_owned(), params, named_params: Vec::new() }
}

fn integer(value: i64) -> Value {
    Value { kind: Some(value::Kind::Integer(value)) }
}

/// What a stale read with `bound` may miss, in simulated time: writes
/// acknowledged up to `bound` before it, as measured on the serving node's
/// clock, which runs at no less than `1 - drift` (no jumps in these seeds).
pub fn stale_allowance(bound: Duration, drift: f64) -> Duration {
    bound.div_f64(1.0 - drift) + CLOCK_ROUNDING
}

/// A clock's reading is rounded to the nanosecond (`Duration::mul_f64`).
const CLOCK_ROUNDING: Duration = Duration::from_micros(1);
/// Share of a sticky client's operations sent to its own node.
const STICKY_SHARE: f64 = 0.8;
/// Share of register reads that are bounded-stale, in seeds with them.
const STALE_READ_SHARE: f64 = 0.8;
/// The bounds they ask for: from e^-5 s (7 ms) to e^0.5 s (1.6 s).
const STALE_BOUND_LN_SECS: std::ops::Range<f64> = -5.0..0.5;
/// Share of operations (percent) drawn from the SQL workload.
const SQL_PERCENT: u32 = 20;
/// How long a client avoids a node that timed out.
const SUSPECT_AFTER_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on one client operation, connection included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(3);
/// A bound on each client's loop, so no run is unbounded.
const OPERATIONS_PER_CLIENT_MAX: usize = 100_000;
const FINAL_READ_ATTEMPTS: usize = 50;
/// The canary's corruption: a value no client ever writes.
const CANARY_FLIP: i64 = 1 << 62;
