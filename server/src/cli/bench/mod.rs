//! `deeb bench`: closed-loop clients, each on a connection of its own,
//! spread over the cluster's nodes, running a key-value workload (upserts
//! of a fixed-size value, point reads at a chosen consistency, or a mix);
//! prints throughput, latency percentiles and, for deeb, how many raft
//! entries the writes took. The same loop drives an etcd cluster
//! (`--target etcd`), so `bench/compare.sh` compares like with like.

#[cfg(not(madsim))]
pub mod baseline;
#[cfg(not(madsim))]
mod etcd;

use std::time::Duration;

use deeb_client::{GrpcClient, Pool};
use deeb_proto::{Consistency, ExecuteRequest, QueryRequest, Statement, Value};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::Request;

use deeb_server::api::statement;

use super::args::{BenchArgs, BenchConsistency, BenchMode, BenchTarget};

/// The table the benchmark writes and reads.
const TABLE: &str = "bench_kv";

/// One client's connection to one node of the system under test.
enum Connection {
    Deeb(DeebConnection),
    #[cfg(not(madsim))]
    Etcd(etcd::EtcdConnection),
}

/// What a client does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Write,
    Read,
}

impl Connection {
    async fn run(&mut self, op: Op, key: u64, value: &[u8], consistency: BenchConsistency) -> Result<(), String> {
        match self {
            Connection::Deeb(connection) => match op {
                Op::Write => connection.upsert(key, value).await,
                Op::Read => connection.point_read(key, consistency).await,
            },
            #[cfg(not(madsim))]
            Connection::Etcd(connection) => match op {
                Op::Write => connection.put(key, value).await,
                Op::Read => connection.range(key, consistency).await,
            },
        }
    }
}

/// A gRPC channel of its own and the credentials every call carries.
#[derive(Clone)]
struct DeebConnection {
    grpc: GrpcClient,
    authorization: Option<MetadataValue<Ascii>>,
}

impl DeebConnection {
    /// A new connection (not shared with any other client) to `address`.
    fn open(args: &BenchArgs, address: &str) -> Result<Self, String> {
        let options = super::commands::client_options(&args.client)?;
        let pool = Pool::new(deeb_server::client::CONNECT_TIMEOUT, None).with_tls(options.tls);
        let grpc = pool.client(address).map_err(|error| error.to_string())?;
        let authorization =
            options.authorization.map(|text| text.parse().map_err(|_| "unusable credentials".to_owned()));
        Ok(DeebConnection { grpc, authorization: authorization.transpose()? })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(value) = &self.authorization {
            request.metadata_mut().insert("authorization", value.clone());
        }
        request
    }

    async fn execute(&mut self, statement: Statement) -> Result<(), String> {
        let request = self.request(ExecuteRequest { statements: vec![statement], ..Default::default() });
        self.grpc.execute(request).await.map(drop).map_err(|status| status.message().to_owned())
    }

    async fn upsert(&mut self, key: u64, value: &[u8]) -> Result<(), String> {
        // REPLACE INTO: the same upsert in SQLite and MySQL.
        let sql = format!("REPLACE INTO {TABLE} (k, v) VALUES (?, ?)");
        let params = vec![integer(key as i64), Value { kind: Some(deeb_proto::value::Kind::Blob(value.to_vec())) }];
        self.execute(Statement { sql, params, named_params: Vec::new() }).await
    }

    async fn point_read(&mut self, key: u64, consistency: BenchConsistency) -> Result<(), String> {
        let sql = format!("SELECT v FROM {TABLE} WHERE k = ?");
        let statement = Statement { sql, params: vec![integer(key as i64)], named_params: Vec::new() };
        let consistency = match consistency {
            BenchConsistency::Linearizable => Consistency::Linearizable,
            BenchConsistency::Lease => Consistency::Lease,
            BenchConsistency::Stale => Consistency::Stale,
        };
        let request = QueryRequest {
            statement: Some(statement),
            consistency: consistency as i32,
            max_staleness_ms: 0,
            timeout_ms: 0,
        };
        let request = self.request(request);
        let response = self.grpc.query(request).await.map_err(|status| status.message().to_owned())?;
        let mut stream = response.into_inner();
        while stream.message().await.map_err(|status| status.message().to_owned())?.is_some() {}
        Ok(())
    }

    /// The node's commit index (to count the entries the writes took).
    async fn commit_index(&mut self) -> Result<u64, String> {
        let request = self.request(deeb_proto::StatusRequest::default());
        let status = self.grpc.status(request).await.map_err(|status| status.message().to_owned())?;
        Ok(status.into_inner().commit_index)
    }
}

fn integer(value: i64) -> Value {
    Value { kind: Some(deeb_proto::value::Kind::Integer(value)) }
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub mode: String,
    pub consistency: String,
    pub clients: usize,
    pub nodes: Vec<String>,
    pub value_bytes: usize,
    pub keys: u64,
    pub seconds: f64,
    pub ops_per_second: f64,
    pub writes: Latencies,
    pub reads: Latencies,
    pub errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// deeb only: raft entries committed during the run per write (below
    /// one: group commit put several writes in one entry).
    pub entries_per_write: Option<f64>,
    /// The longest time in the measured window with no write acknowledged
    /// (from its start, between two writes, or to its end), in ms.
    pub max_write_gap_ms: f64,
}

/// Count and percentiles of one kind of operation.
#[derive(Debug, Default, Serialize)]
pub struct Latencies {
    pub count: u64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

impl Latencies {
    fn of(samples: &mut [Duration], seconds: f64) -> Latencies {
        samples.sort_unstable();
        let ms = |fraction| percentile(samples, fraction).as_secs_f64() * 1000.0;
        Latencies {
            count: samples.len() as u64,
            per_second: samples.len() as f64 / seconds.max(f64::MIN_POSITIVE),
            p50_ms: ms(0.50),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
        }
    }

    fn line(&self, what: &str) -> String {
        format!(
            "{what}: {} ok, {:.0}/s; latency p50 {:.2}ms p99 {:.2}ms p999 {:.2}ms\n",
            self.count, self.per_second, self.p50_ms, self.p99_ms, self.p999_ms
        )
    }
}

impl Report {
    /// The report as text for a person, or one JSON object.
    pub fn render(&self, json: bool) -> String {
        if json {
            return serde_json::to_string(self).expect("a report serializes") + "\n";
        }
        let mut text = format!(
            "{} {} ({}), {} clients over {} node(s), {}-byte values, {} keys, {:.1}s: {:.0} ops/s, {} errors\n",
            self.target,
            self.mode,
            self.consistency,
            self.clients,
            self.nodes.len(),
            self.value_bytes,
            self.keys,
            self.seconds,
            self.ops_per_second,
            self.errors
        );
        if self.writes.count > 0 {
            text += &self.writes.line("  writes");
        }
        if self.reads.count > 0 {
            text += &self.reads.line("  reads");
        }
        if self.writes.count > 0 {
            text += &format!("  longest time without an acknowledged write: {:.0}ms\n", self.max_write_gap_ms);
        }
        if let Some(ratio) = self.entries_per_write {
            text += &format!("  raft entries per write: {ratio:.3}\n");
        }
        if let Some(error) = &self.first_error {
            text += &format!("  first error: {error}\n");
        }
        text
    }
}

/// Runs the benchmark and returns the report, as text or JSON.
///
/// # Errors
/// Setup failed (connection, table creation, finding the nodes).
pub async fn run(args: &BenchArgs) -> Result<String, String> {
    Ok(measure(args).await?.render(args.json))
}

/// Runs the benchmark.
///
/// # Errors
/// As [`run`].
pub async fn measure(args: &BenchArgs) -> Result<Report, String> {
    if args.clients == 0 || args.keys == 0 {
        return Err("--clients and --keys must be at least 1".to_owned());
    }
    let nodes = nodes(args).await?;
    let mut connections = Vec::with_capacity(args.clients);
    for client in 0..args.clients {
        connections.push(connect(args, &nodes[client % nodes.len()])?);
    }
    setup(args, &mut connections[0]).await?;
    let mut probe = match args.target {
        BenchTarget::Deeb => Some(DeebConnection::open(args, &nodes[0])?),
        BenchTarget::Etcd => None,
    };
    let started = Instant::now();
    let measured_from = started + args.warmup;
    let deadline = measured_from + args.duration;
    let value = vec![b'v'; args.value_bytes];
    let mut tasks = Vec::new();
    for (worker, connection) in connections.into_iter().enumerate() {
        let plan = Plan {
            mode: args.mode,
            consistency: args.consistency,
            keys: args.keys,
            write_percent: args.write_percent,
            value: value.clone(),
            seed: worker as u64,
        };
        tasks.push(tokio::spawn(worker_loop(connection, plan, measured_from, deadline)));
    }
    tokio::time::sleep_until(measured_from).await;
    let first_index = match probe.as_mut() {
        Some(probe) => Some(probe.commit_index().await?),
        None => None,
    };
    let (mut writes, mut reads, mut errors, mut first_error) = (Vec::new(), Vec::new(), 0, None);
    let mut acknowledged = Vec::new();
    for task in tasks {
        let outcome = task.await.map_err(|error| error.to_string())?;
        writes.extend(outcome.writes);
        acknowledged.extend(outcome.acknowledged);
        reads.extend(outcome.reads);
        errors += outcome.errors;
        first_error = first_error.or(outcome.first_error);
    }
    let seconds = args.duration.as_secs_f64();
    let entries = match (probe.as_mut(), first_index) {
        (Some(probe), Some(first)) => Some(probe.commit_index().await?.saturating_sub(first)),
        _ => None,
    };
    let entries_per_write = entries.filter(|_| !writes.is_empty()).map(|entries| entries as f64 / writes.len() as f64);
    let ops_per_second = (writes.len() + reads.len()) as f64 / seconds;
    let max_write_gap_ms = longest_gap(measured_from, &mut acknowledged, deadline).as_secs_f64() * 1000.0;
    Ok(Report {
        target: format!("{:?}", args.target).to_lowercase(),
        mode: format!("{:?}", args.mode).to_lowercase(),
        consistency: format!("{:?}", args.consistency).to_lowercase(),
        clients: args.clients,
        nodes,
        value_bytes: args.value_bytes,
        keys: args.keys,
        seconds,
        ops_per_second,
        writes: Latencies::of(&mut writes, seconds),
        reads: Latencies::of(&mut reads, seconds),
        errors,
        first_error,
        entries_per_write,
        max_write_gap_ms,
    })
}

/// The longest stretch of `from..to` without one of the `instants`.
fn longest_gap(from: Instant, instants: &mut [Instant], to: Instant) -> Duration {
    instants.sort_unstable();
    let mut previous = from;
    let mut longest = Duration::ZERO;
    for &instant in instants.iter().chain([&to]) {
        longest = longest.max(instant.saturating_duration_since(previous));
        previous = previous.max(instant);
    }
    longest
}

/// The nodes clients connect to: every address given (comma-separated),
/// and for deeb with one address and no `--one-node`, every voter of its
/// cluster that has told its client address, the leader first (client `i`
/// goes to node `i mod n`).
async fn nodes(args: &BenchArgs) -> Result<Vec<String>, String> {
    let given: Vec<String> =
        args.client.addr.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned).collect();
    if given.is_empty() {
        return Err("--addr names no node".to_owned());
    }
    if given.len() > 1 || args.one_node || args.target != BenchTarget::Deeb {
        return Ok(given);
    }
    let client = super::commands::connect(&args.client)?;
    let status = client.status(&given[0]).await.map_err(|error| super::commands::describe_error(&error))?;
    // The leader first: a single client reads where lease reads are local.
    let mut voters: Vec<_> = status.members.iter().filter(|member| !member.learner).collect();
    voters.sort_by_key(|member| member.node_id != status.leader_id);
    let mut members: Vec<String> = voters
        .iter()
        .filter(|member| !member.client_address.is_empty())
        .map(|member| member.client_address.clone())
        .collect();
    if members.is_empty() {
        members = given;
    }
    Ok(members)
}

fn connect(args: &BenchArgs, address: &str) -> Result<Connection, String> {
    match args.target {
        BenchTarget::Deeb => Ok(Connection::Deeb(DeebConnection::open(args, address)?)),
        #[cfg(not(madsim))]
        BenchTarget::Etcd => Ok(Connection::Etcd(etcd::EtcdConnection::open(address)?)),
        #[cfg(madsim)]
        BenchTarget::Etcd => Err("no etcd target in the simulator".to_owned()),
    }
}

/// Creates the table (deeb) and writes every key once when reads are
/// measured, so they find a row.
async fn setup(args: &BenchArgs, connection: &mut Connection) -> Result<(), String> {
    if let Connection::Deeb(deeb) = connection {
        let create = format!("CREATE TABLE IF NOT EXISTS {TABLE} (k INTEGER PRIMARY KEY, v BLOB)");
        deeb.execute(statement(&create)).await?;
    }
    if args.mode == BenchMode::Write {
        return Ok(());
    }
    match connection {
        Connection::Deeb(deeb) => {
            // In chunks of rows with parameters (SQL both SQLite and MySQL
            // take), to stay under the per-request limits.
            let chunk = ((1 << 20) / (args.value_bytes as u64 + 16).max(1)).clamp(1, 500);
            let value = Value { kind: Some(deeb_proto::value::Kind::Blob(vec![0; args.value_bytes])) };
            let mut first = 0;
            while first < args.keys {
                let last = (first + chunk).min(args.keys);
                let rows = vec!["(?, ?)"; (last - first) as usize].join(", ");
                let sql = format!("REPLACE INTO {TABLE} (k, v) VALUES {rows}");
                let params = (first..last).flat_map(|key| [integer(key as i64), value.clone()]).collect();
                deeb.execute(Statement { sql, params, named_params: Vec::new() }).await?;
                first = last;
            }
        }
        #[cfg(not(madsim))]
        Connection::Etcd(etcd) => {
            let value = vec![b'v'; args.value_bytes];
            for key in 0..args.keys {
                etcd.put(key, &value).await?;
            }
        }
    }
    Ok(())
}

/// What one client does.
struct Plan {
    mode: BenchMode,
    consistency: BenchConsistency,
    keys: u64,
    write_percent: u8,
    value: Vec<u8>,
    seed: u64,
}

/// What one client saw after the warm-up.
#[derive(Default)]
struct Outcome {
    writes: Vec<Duration>,
    /// When each write was acknowledged.
    acknowledged: Vec<Instant>,
    reads: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

async fn worker_loop(mut connection: Connection, plan: Plan, measured_from: Instant, deadline: Instant) -> Outcome {
    let mut outcome = Outcome::default();
    let mut random = SmallRng::seed_from_u64(plan.seed);
    loop {
        let started = Instant::now();
        if started >= deadline {
            return outcome;
        }
        let op = match plan.mode {
            BenchMode::Write => Op::Write,
            BenchMode::Read => Op::Read,
            BenchMode::Mixed if random.gen_range(0..100) < plan.write_percent => Op::Write,
            BenchMode::Mixed => Op::Read,
        };
        let key = random.gen_range(0..plan.keys);
        let result = connection.run(op, key, &plan.value, plan.consistency).await;
        let finished = Instant::now();
        if started < measured_from || finished > deadline {
            continue;
        }
        match (result, op) {
            (Ok(()), Op::Write) => {
                outcome.writes.push(finished - started);
                outcome.acknowledged.push(finished);
            }
            (Ok(()), Op::Read) => outcome.reads.push(finished - started),
            (Err(error), _) => {
                outcome.errors += 1;
                outcome.first_error.get_or_insert(error);
            }
        }
    }
}

/// The `fraction` percentile of sorted samples (zero when empty).
pub fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_rank() {
        let samples: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 0.5), Duration::from_millis(500));
        assert_eq!(percentile(&samples, 0.99), Duration::from_millis(990));
        assert_eq!(percentile(&samples, 0.999), Duration::from_millis(999));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn longest_gap_counts_the_window_edges() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let end = at(1000);
        assert_eq!(longest_gap(start, &mut [at(100), at(700), at(300)], end), Duration::from_millis(400));
        assert_eq!(longest_gap(start, &mut [at(900)], end), Duration::from_millis(900));
        assert_eq!(longest_gap(start, &mut [], end), Duration::from_millis(1000));
    }

    #[test]
    fn latencies_count_rate_and_percentiles() {
        let mut samples = vec![Duration::from_millis(2); 100];
        let latencies = Latencies::of(&mut samples, 2.0);
        assert_eq!((latencies.count, latencies.per_second, latencies.p99_ms), (100, 50.0, 2.0));
        assert!(latencies.line("writes").contains("50/s"), "{}", latencies.line("writes"));
    }
}
