//! A cluster of real `deeb serve` processes on 127.0.0.1 with free ports,
//! killed when dropped (also when a test fails). Every wait is bounded.

#![allow(dead_code)] // Each test file uses a different part.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deeb_client::{Error, GrpcClient as Client, Options, Value};
use deeb_proto::{ExecuteResponse, StatusResponse};
use deeb_server::client::connect;

pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// Each node's client port.
    pub ports: BTreeMap<u64, u16>,
    /// Each node's peer port (`--peer-listen`): what the peer list and the
    /// member records hold.
    pub peer_ports: BTreeMap<u64, u16>,
    /// Each node's HTTP port (`--http-listen`).
    pub http_ports: BTreeMap<u64, u16>,
    pub children: BTreeMap<u64, Child>,
    pub extra_args: Vec<String>,
    /// Arguments of one node only (e.g. its own `--mysql-url`).
    pub node_args: BTreeMap<u64, Vec<String>>,
    /// How `status`, `execute` and `query` connect (TLS, credentials).
    pub options: Options,
    /// Strings no log line may hold (passwords, tokens); key material is
    /// looked for always.
    pub secrets: Vec<String>,
    /// A command every node runs under (`ip netns exec NAME`), if any.
    pub launcher: Vec<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            self.dump_logs();
            return;
        }
        let leaked = self.leaked_secrets();
        assert!(leaked.is_empty(), "secrets in the node logs: {leaked:?}");
    }
}

/// What marks key material in a log line.
pub const KEY_MARKERS: [&str; 2] = ["PRIVATE KEY", "BEGIN CERTIFICATE"];

/// The lines of `text` that hold one of `secrets` or key material.
pub fn lines_with_secrets<'a>(text: &'a str, secrets: &[String]) -> Vec<&'a str> {
    text.lines()
        .filter(|line| {
            KEY_MARKERS.iter().any(|marker| line.contains(marker))
                || secrets.iter().any(|secret| !secret.is_empty() && line.contains(secret.as_str()))
        })
        .collect()
}

/// A port free now and not handed out before in this process: the kernel
/// can give the same free port to two `bind(0)` calls in a row, and a
/// cluster that got one port twice had a node fail to listen (CI run of
/// d763ea4, `join_promote_and_remove_while_serving`).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = listener.local_addr().expect("local address").port();
        if GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(port) {
            return port;
        }
    }
    panic!("no port free and not handed out before in 1000 tries")
}

impl Cluster {
    /// Starts `size` voters of a new cluster.
    pub fn start(size: u64, extra_args: &[&str]) -> Self {
        Self::start_under(&[], size, extra_args)
    }

    /// [`Cluster::start`] with every node run under `launcher` (a command
    /// and its arguments, the node's command line appended).
    pub fn start_under(launcher: &[&str], size: u64, extra_args: &[&str]) -> Self {
        let mut cluster = Self::unstarted(launcher, size, extra_args);
        for id in 1..=size {
            cluster.spawn(id);
        }
        cluster
    }

    /// A cluster's directories and ports, no node started yet (start each
    /// with [`Cluster::spawn`]).
    pub fn unstarted(launcher: &[&str], size: u64, extra_args: &[&str]) -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            ports: (1..=size).map(|id| (id, free_port())).collect(),
            peer_ports: (1..=size).map(|id| (id, free_port())).collect(),
            http_ports: (1..=size).map(|id| (id, free_port())).collect(),
            children: BTreeMap::new(),
            extra_args: extra_args.iter().map(|arg| (*arg).to_owned()).collect(),
            node_args: BTreeMap::new(),
            options: Options::default(),
            secrets: Vec::new(),
            launcher: launcher.iter().map(|arg| (*arg).to_owned()).collect(),
        }
    }

    /// Log lines (of every node) that hold a secret or key material.
    pub fn leaked_secrets(&self) -> Vec<String> {
        let mut leaked = Vec::new();
        for id in self.ports.keys() {
            let path = self.dir.path().join(format!("node-{id}.log"));
            let text = std::fs::read_to_string(path).unwrap_or_default();
            leaked
                .extend(lines_with_secrets(&text, &self.secrets).into_iter().map(|line| format!("node {id}: {line}")));
        }
        leaked
    }

    pub fn addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.ports[&id])
    }

    /// Node `id`'s HTTP API.
    pub fn http_addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.http_ports[&id])
    }

    /// Node `id`'s peer listener: its address in the member records.
    pub fn peer_addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.peer_ports[&id])
    }

    /// The initial voters, as `--peers` takes them.
    pub fn peers(&self) -> String {
        let initial = self.ports.keys().filter(|id| **id <= 3);
        initial.map(|id| format!("{id}={}", self.peer_addr(*id))).collect::<Vec<_>>().join(",")
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    /// Starts (or restarts) node `id` with the initial peer list.
    pub fn spawn(&mut self, id: u64) {
        let peers = self.peers();
        self.spawn_with(id, &["--peers", &peers]);
    }

    /// Starts a new node that joins through `via`'s peer listener.
    pub fn spawn_joining(&mut self, id: u64, via: u64, learner: bool) {
        self.ports.entry(id).or_insert_with(free_port);
        self.peer_ports.entry(id).or_insert_with(free_port);
        self.http_ports.entry(id).or_insert_with(free_port);
        let via = self.peer_addr(via);
        let mut args = vec!["--join", via.as_str()];
        if learner {
            args.push("--learner");
        }
        self.spawn_with(id, &args);
    }

    /// Starts node `id` founding a cluster of its own with `peers`
    /// (`ID=PEER_ADDRESS,...`, where `self` names this node's peer address).
    pub fn spawn_founding(&mut self, id: u64, peers: &str) {
        self.ports.entry(id).or_insert_with(free_port);
        self.peer_ports.entry(id).or_insert_with(free_port);
        self.http_ports.entry(id).or_insert_with(free_port);
        let peers = peers.replace("self", &self.peer_addr(id));
        self.spawn_with(id, &["--peers", &peers]);
    }

    fn spawn_with(&mut self, id: u64, args: &[&str]) {
        assert!(!self.children.contains_key(&id), "node {id} already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node-{id}.log")))
            .expect("log file");
        let mut command = match self.launcher.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(env!("CARGO_BIN_EXE_deeb"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_deeb")),
        };
        let child = command
            .args(["serve", "--id", &id.to_string(), "--listen", &self.addr(id), "--log-level", "info"])
            .args(["--peer-listen", &self.peer_addr(id), "--http-listen", &self.http_addr(id)])
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .args(args)
            .args(&self.extra_args)
            .args(self.node_args.get(&id).into_iter().flatten())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start deeb serve");
        self.children.insert(id, child);
    }

    /// SIGKILL.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.children.remove(&id) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit; returns its success.
    pub fn terminate(&mut self, id: u64) -> bool {
        let Some(mut child) = self.children.remove(&id) else { return false };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    pub fn dump_logs(&self) {
        for id in self.ports.keys() {
            let path = self.dir.path().join(format!("node-{id}.log"));
            if let Ok(text) = std::fs::read_to_string(path) {
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                eprintln!("--- node {id} log (last lines) ---");
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }

    pub async fn client(&self, id: u64) -> Client {
        let address = self.addr(id);
        let security = deeb_server::security::Security::open();
        wait_for(Duration::from_secs(20), "connect", || async { connect(&security, &address).await.ok() }).await
    }

    pub async fn status(&self, id: u64) -> Result<StatusResponse, Error> {
        self.sql_client(id, self.options.clone()).status(&self.addr(id)).await
    }

    /// A client-crate client of node `id` alone: with `follow_leader` off
    /// (as `execute` uses it) writes go to that node, which forwards them.
    pub fn sql_client(&self, id: u64, options: Options) -> deeb_client::Client {
        deeb_client::Client::new(&[&self.addr(id)], options)
    }

    /// Waits for a node among `ids` to report a leader, and returns it.
    pub async fn wait_leader(&self, ids: &[u64]) -> u64 {
        wait_for(Duration::from_secs(20), "a leader", || async {
            for id in ids {
                if let Ok(status) = self.status(*id).await {
                    if status.leader_id != 0 && status.role == "leader" {
                        return Some(status.node_id);
                    }
                }
            }
            None
        })
        .await
    }

    /// A write sent to node `id` (a follower forwards it), with an
    /// idempotency key and the client crate's retries.
    pub async fn execute(&self, id: u64, sql: &str) -> Result<ExecuteResponse, Error> {
        self.sql_client(id, Options { follow_leader: false, ..self.options.clone() }).execute_sql(sql).await
    }

    /// A linearizable query on node `id`, read whole.
    pub async fn query(&self, id: u64, sql: &str) -> Result<QueryResult, Error> {
        query_with(&self.sql_client(id, self.options.clone()), sql).await
    }

    /// Waits until every node of `ids` applied `index` and all report the
    /// same digest at the same index.
    pub async fn assert_equal_digests(&self, ids: &[u64], index: u64) {
        for id in ids {
            self.wait_applied(*id, index).await;
        }
        wait_for(Duration::from_secs(20), "equal digests", || async {
            let mut seen = Vec::new();
            for id in ids {
                let mut client = self.client(*id).await;
                let request = deeb_proto::StatusRequest { with_digest: true };
                let status = client.status(request).await.ok()?.into_inner();
                seen.push((status.digest_index, status.digest));
            }
            (seen.windows(2).all(|pair| pair[0] == pair[1])).then_some(())
        })
        .await;
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64) {
        wait_for(Duration::from_secs(30), "applied index", || async {
            self.status(id).await.ok().filter(|status| status.applied_index >= index).map(drop)
        })
        .await
    }
}

/// An HTTP/1.0 answer (it runs to the close).
pub struct HttpAnswer {
    pub status: u16,
    /// The status line and headers, lower-cased.
    pub head: String,
    pub body: Vec<u8>,
    /// Still open when the reading time ran out (a stream without end).
    pub open: bool,
}

/// Sends `request` (head and body, HTTP/1.0) to `address` and reads the
/// answer for at most `read_for`.
pub async fn http(address: &str, request: &[u8], read_for: Duration) -> HttpAnswer {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let open = tokio::time::timeout(read_for, stream.read_to_end(&mut answer)).await.is_err();
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(answer.len());
    let head = String::from_utf8_lossy(&answer[..end]).to_lowercase();
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = answer.get(end + 4..).unwrap_or_default().to_vec();
    HttpAnswer { status, head, body, open }
}

/// Polls `probe` until it yields a value; panics after `bound`.
pub async fn wait_for<T, F, Fut>(bound: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + bound;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "not reached within {bound:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A query's whole result.
#[derive(Debug, Default)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    pub served_by: u64,
}

/// Runs `sql` on `client` and reads every row.
pub async fn query_with(client: &deeb_client::Client, sql: &str) -> Result<QueryResult, Error> {
    let mut rows = client.query(sql, &[]).await?;
    let mut result = QueryResult { columns: rows.columns().await?, ..QueryResult::default() };
    while let Some(row) = rows.next().await? {
        result.rows.push(row);
    }
    result.served_by = rows.served_by();
    Ok(result)
}

/// The rows of a result as strings, for comparisons.
pub fn cells(result: &QueryResult) -> Vec<Vec<String>> {
    result.rows.iter().map(|row| row.iter().map(text_of).collect()).collect()
}

/// A value as the CLI's table shows it.
pub fn text_of(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_owned(),
        Value::Integer(integer) => integer.to_string(),
        Value::Real(real) => real.to_string(),
        Value::Text(text) => text.clone(),
        Value::Blob(blob) => format!("x'{}'", blob.iter().map(|byte| format!("{byte:02x}")).collect::<String>()),
    }
}

/// Process `pid`'s peak RSS so far in KiB (`VmHWM`), if it is running.
pub fn peak_rss_kib(pid: u32) -> Option<i64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Starts measuring process `pid`'s peak RSS afresh (`VmHWM` back to its
/// current RSS, as `clear_refs` value 5 does), so a later
/// [`peak_rss_kib`] shows the peak of what came after, not of earlier work.
/// Returns the RSS it starts from, in KiB.
pub fn reset_peak_rss(pid: u32) -> i64 {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset the peak RSS");
    peak_rss_kib(pid).expect("the peak RSS just reset")
}

/// Waits for `child` and returns its exit code and its own peak RSS in KiB:
/// the largest `VmHWM` of its process image, polled until it exits. (Not
/// `wait4`'s `ru_maxrss`: Linux carries into it the peak of the image the
/// child replaced, which for a child spawned with a shared address space is
/// this whole test process.)
pub fn wait_with_peak_rss(mut child: std::process::Child) -> (i32, i64) {
    let mut peak_kib = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        peak_kib = peak_kib.max(peak_rss_kib(child.id()).unwrap_or(0));
        if let Some(status) = child.try_wait().expect("try_wait") {
            return (status.code().unwrap_or(-1), peak_kib);
        }
        assert!(std::time::Instant::now() < deadline, "the child did not exit");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
