//! `deeb bench`: concurrent clients doing single-row inserts or
//! linearizable point reads; prints throughput and latency percentiles.

use std::time::Duration;

use deeb_proto::{ExecuteRequest, QueryRequest, Statement, Value};
use tokio::time::Instant;

use deeb_client::GrpcClient;
use deeb_server::api::statement;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::Request;

use super::args::{BenchArgs, BenchMode};

/// A connection and the credentials every call carries.
#[derive(Clone)]
struct Client {
    grpc: GrpcClient,
    authorization: Option<MetadataValue<Ascii>>,
}

impl Client {
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(value) = &self.authorization {
            request.metadata_mut().insert("authorization", value.clone());
        }
        request
    }

    async fn execute(&mut self, message: ExecuteRequest) -> Result<deeb_proto::ExecuteResponse, tonic::Status> {
        let request = self.request(message);
        self.grpc.execute(request).await.map(tonic::Response::into_inner)
    }
}

/// Rows inserted before a read benchmark, so point reads find something.
const READ_ROWS: i64 = 1_000;

/// Runs the benchmark and returns the report.
///
/// # Errors
/// Setup failed (connection, table creation).
pub async fn run(args: &BenchArgs) -> Result<String, String> {
    let options = super::commands::client_options(&args.client)?;
    let pool = deeb_client::Pool::new(deeb_server::client::CONNECT_TIMEOUT, None).with_tls(options.tls);
    let grpc = pool.client(&args.client.addr).map_err(|error| error.to_string())?;
    let authorization = options.authorization.map(|text| text.parse().map_err(|_| "unusable credentials".to_owned()));
    let mut client = Client { grpc, authorization: authorization.transpose()? };
    setup(&mut client, args.mode).await?;
    let deadline = Instant::now() + args.duration;
    let mut tasks = Vec::new();
    for worker in 0..args.clients {
        let (client, mode) = (client.clone(), args.mode);
        tasks.push(tokio::spawn(worker_loop(client, mode, worker as i64, deadline)));
    }
    let (mut latencies, mut errors) = (Vec::new(), 0u64);
    for task in tasks {
        let (worker_latencies, worker_errors) = task.await.map_err(|error| error.to_string())?;
        latencies.extend(worker_latencies);
        errors += worker_errors;
    }
    Ok(report(&mut latencies, errors, args.duration))
}

async fn setup(client: &mut Client, mode: BenchMode) -> Result<(), String> {
    let create = "CREATE TABLE IF NOT EXISTS bench (id INTEGER PRIMARY KEY, worker INTEGER, payload TEXT)";
    client
        .execute(ExecuteRequest { statements: vec![statement(create)], ..Default::default() })
        .await
        .map_err(|s| s.message().to_owned())?;
    if mode == BenchMode::Read {
        let fill = format!(
            "INSERT OR IGNORE INTO bench (id, worker, payload) \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {READ_ROWS}) \
             SELECT i, 0, 'row ' || i FROM n"
        );
        client
            .execute(ExecuteRequest { statements: vec![statement(&fill)], ..Default::default() })
            .await
            .map_err(|s| s.message().to_owned())?;
    }
    Ok(())
}

async fn worker_loop(mut client: Client, mode: BenchMode, worker: i64, deadline: Instant) -> (Vec<Duration>, u64) {
    let (mut latencies, mut errors) = (Vec::new(), 0);
    let mut sequence = 0i64;
    while Instant::now() < deadline {
        sequence += 1;
        let started = Instant::now();
        let ok = match mode {
            BenchMode::Write => insert(&mut client, worker, sequence).await,
            BenchMode::Read => point_read(&mut client, (worker * 7919 + sequence) % READ_ROWS + 1).await,
        };
        if ok {
            latencies.push(started.elapsed());
        } else {
            errors += 1;
        }
    }
    (latencies, errors)
}

async fn insert(client: &mut Client, worker: i64, sequence: i64) -> bool {
    let sql = "INSERT INTO bench (worker, payload) VALUES (?, ?)";
    let params =
        vec![integer(worker), Value { kind: Some(deeb_proto::value::Kind::Text(format!("w{worker}-{sequence}"))) }];
    let request = ExecuteRequest {
        statements: vec![Statement { sql: sql.into(), params, named_params: Vec::new() }],
        ..Default::default()
    };
    client.execute(request).await.is_ok()
}

async fn point_read(client: &mut Client, id: i64) -> bool {
    let statement = Statement {
        sql: "SELECT payload FROM bench WHERE id = ?".into(),
        params: vec![integer(id)],
        named_params: Vec::new(),
    };
    let request = QueryRequest { statement: Some(statement), consistency: 0, max_staleness_ms: 0, timeout_ms: 0 };
    let request = client.request(request);
    let Ok(response) = client.grpc.query(request).await else { return false };
    let mut stream = response.into_inner();
    loop {
        match stream.message().await {
            Ok(Some(_)) => {}
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

fn integer(value: i64) -> Value {
    Value { kind: Some(deeb_proto::value::Kind::Integer(value)) }
}

/// Throughput and latency percentiles as text.
pub fn report(latencies: &mut [Duration], errors: u64, duration: Duration) -> String {
    latencies.sort_unstable();
    let ops = latencies.len() as f64 / duration.as_secs_f64().max(f64::MIN_POSITIVE);
    format!(
        "{} ok, {errors} errors in {:.1}s: {ops:.0} ops/s; latency p50 {} p99 {} p999 {}\n",
        latencies.len(),
        duration.as_secs_f64(),
        format_latency(percentile(latencies, 0.50)),
        format_latency(percentile(latencies, 0.99)),
        format_latency(percentile(latencies, 0.999)),
    )
}

/// The `fraction` percentile of sorted samples (zero when empty).
pub fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn format_latency(latency: Duration) -> String {
    format!("{:.2}ms", latency.as_secs_f64() * 1000.0)
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
    fn report_mentions_throughput() {
        let mut samples = vec![Duration::from_millis(2); 100];
        let text = report(&mut samples, 1, Duration::from_secs(1));
        assert!(text.contains("100 ops/s"), "{text}");
        assert!(text.contains("p99 2.00ms"), "{text}");
    }
}
