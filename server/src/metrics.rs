//! One node's Prometheus metrics, served at `/metrics`. The server keeps
//! them (the core knows nothing of them): raft state from `Node::status`
//! when scraped; the rest counted where it happens (the event loop's jobs,
//! the log's fsyncs, the peer links, the client calls, the listeners).
//! Names follow etcd's where the meaning is the same, prefixed `deeb_`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deeb_core::disk::{Disk, DiskError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::hooks::Job;

/// Which API a client call came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Grpc,
    Http,
    /// Forwarded by another node (on the peer listener).
    Forwarded,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    api: &'static str,
    operation: &'static str,
    /// `ok`, or the gRPC code's name in snake case.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    api: &'static str,
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsistencyLabels {
    consistency: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

/// A node's metrics; clones share them.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

struct Inner {
    registry: Registry,
    term: Gauge,
    is_leader: Gauge,
    has_leader: Gauge,
    role: Family<RoleLabels, Gauge>,
    leader_changes: Counter,
    last_leader: Mutex<Option<u64>>,
    committed: Gauge,
    applied: Gauge,
    snapshot_index: Gauge,
    proposals_pending: Gauge,
    proposals_failed: Counter,
    batch_requests: Histogram,
    batches_on_top: Counter,
    wal_fsync: Histogram,
    jobs: Family<JobLabels, Histogram>,
    peer_sent: Family<PeerLabels, Counter>,
    peer_received: Family<PeerLabels, Counter>,
    peer_match: Family<PeerLabels, Gauge>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<OperationLabels, Histogram>,
    reads: Family<ConsistencyLabels, Counter>,
    connections: Family<ListenerLabels, Gauge>,
    connections_refused: Family<ListenerLabels, Counter>,
    scheduled_backups: Family<OutcomeLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("deeb");
        let seconds = || Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        let inner = Inner {
            term: Gauge::default(),
            is_leader: Gauge::default(),
            has_leader: Gauge::default(),
            role: Family::default(),
            leader_changes: Counter::default(),
            last_leader: Mutex::new(None),
            committed: Gauge::default(),
            applied: Gauge::default(),
            snapshot_index: Gauge::default(),
            proposals_pending: Gauge::default(),
            proposals_failed: Counter::default(),
            batch_requests: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            batches_on_top: Counter::default(),
            wal_fsync: seconds(),
            jobs: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 18))),
            peer_sent: Family::default(),
            peer_received: Family::default(),
            peer_match: Family::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 18))),
            reads: Family::default(),
            connections: Family::default(),
            connections_refused: Family::default(),
            scheduled_backups: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("server_term", "The raft term this node is in", inner.term.clone());
        r.register("server_is_leader", "1 if this node leads", inner.is_leader.clone());
        r.register("server_has_leader", "1 if this node knows a leader", inner.has_leader.clone());
        r.register("server_role", "1 for this node's raft role", inner.role.clone());
        r.register("server_leader_changes_seen", "Leader changes this node saw", inner.leader_changes.clone());
        r.register("server_proposals_committed", "The commit index this node knows", inner.committed.clone());
        r.register("server_proposals_applied", "The index this node has applied", inner.applied.clone());
        r.register("server_snapshot_index", "The index of this node's snapshot", inner.snapshot_index.clone());
        r.register("server_proposals_pending", "Writes in flight on this node", inner.proposals_pending.clone());
        r.register("server_proposals_failed", "Writes that failed on this node", inner.proposals_failed.clone());
        r.register(
            "server_batch_requests",
            "Client requests in each batch the leader proposed (group commit)",
            inner.batch_requests.clone(),
        );
        r.register(
            "server_batches_pipelined",
            "Batches the leader executed on top of batches still in flight (--batches-in-flight)",
            inner.batches_on_top.clone(),
        );
        r.register("disk_wal_fsync_duration_seconds", "Raft log fsyncs", inner.wal_fsync.clone());
        r.register(
            "job_duration_seconds",
            "Work off the event loop: batch (leader SQL), apply (with its COMMIT and fsync), snapshot \
             (taking one), install (a received one), digest",
            inner.jobs.clone(),
        );
        r.register("network_peer_sent_bytes", "Raft message bytes sent to each peer", inner.peer_sent.clone());
        r.register(
            "network_peer_received_bytes",
            "Raft message bytes received from each peer",
            inner.peer_received.clone(),
        );
        r.register("raft_match_index", "The leader's match index of each member", inner.peer_match.clone());
        r.register("requests", "Client calls by API, operation and outcome", inner.requests.clone());
        r.register("request_duration_seconds", "Client calls by API and operation", inner.request_seconds.clone());
        r.register("reads", "Queries by consistency", inner.reads.clone());
        r.register("open_connections", "Connections open on each listener", inner.connections.clone());
        r.register(
            "refused_connections",
            "Connections refused on each listener (over --max-connections)",
            inner.connections_refused.clone(),
        );
        r.register(
            "scheduled_backups",
            "Scheduled backup slots this node handled: taken, unchanged (skipped), failed",
            inner.scheduled_backups.clone(),
        );
        Metrics(Arc::new(Inner { registry, ..inner }))
    }

    /// Raft's state, from a fresh `Node::status`.
    pub fn observe_status(&self, status: &deeb_proto::StatusResponse) {
        let m = &self.0;
        m.term.set(gauge(status.term));
        m.is_leader.set(i64::from(status.role == "leader"));
        m.has_leader.set(i64::from(status.leader_id != 0));
        for role in ["leader", "follower", "candidate", "precandidate"] {
            m.role.get_or_create(&RoleLabels { role }).set(i64::from(status.role == role));
        }
        self.observe_leader((status.leader_id != 0).then_some(status.leader_id));
        m.committed.set(gauge(status.commit_index));
        m.applied.set(gauge(status.applied_index));
        m.snapshot_index.set(gauge(status.snapshot_index));
        if status.role == "leader" {
            for member in &status.members {
                m.peer_match.get_or_create(&PeerLabels { peer: member.node_id.to_string() }).set(gauge(member.matched));
            }
        }
    }

    /// The leader this node knows now (the event loop calls this after
    /// every input, so no change goes unseen between scrapes).
    pub fn observe_leader(&self, leader: Option<u64>) {
        let mut last = self.0.last_leader.lock().expect("metrics lock");
        if *last != leader {
            if leader.is_some() {
                self.0.leader_changes.inc();
            }
            *last = leader;
        }
    }

    pub fn batch(&self, requests: usize, on_top: bool) {
        self.0.batch_requests.observe(requests as f64);
        if on_top {
            self.0.batches_on_top.inc();
        }
    }

    pub fn job(&self, job: Job, took: Duration) {
        let job = match job {
            Job::Batch => "batch",
            Job::Apply => "apply",
            Job::Snapshot => "snapshot",
            Job::Install => "install",
            Job::Digest => "digest",
            Job::RemoveFile => "remove_file",
        };
        self.0.jobs.get_or_create(&JobLabels { job }).observe(took.as_secs_f64());
    }

    pub fn peer_sent(&self, peer: u64, bytes: usize) {
        self.0.peer_sent.get_or_create(&PeerLabels { peer: peer.to_string() }).inc_by(bytes as u64);
    }

    pub fn peer_received(&self, peer: u64, bytes: usize) {
        self.0.peer_received.get_or_create(&PeerLabels { peer: peer.to_string() }).inc_by(bytes as u64);
    }

    /// A client call began: counted when the returned guard is told its
    /// outcome (or dropped, as cancelled).
    pub fn call(&self, api: Api, operation: &'static str) -> CallTimer {
        let api = match api {
            Api::Grpc => "grpc",
            Api::Http => "http",
            Api::Forwarded => "forwarded",
        };
        if operation == "execute" {
            self.0.proposals_pending.inc();
        }
        CallTimer { metrics: self.clone(), api, operation, started: Instant::now(), done: false }
    }

    pub fn read(&self, consistency: deeb_proto::Consistency) {
        let consistency = match consistency {
            deeb_proto::Consistency::Linearizable => "linearizable",
            deeb_proto::Consistency::Lease => "lease",
            deeb_proto::Consistency::Stale => "stale",
        };
        self.0.reads.get_or_create(&ConsistencyLabels { consistency }).inc();
    }

    pub fn connection_opened(&self, listener: &'static str) -> ConnectionGauge {
        self.0.connections.get_or_create(&ListenerLabels { listener }).inc();
        ConnectionGauge { metrics: self.clone(), listener }
    }

    /// A scheduled backup slot handled here: `taken`, `unchanged`, `failed`.
    pub fn scheduled_backup(&self, outcome: &'static str) {
        self.0.scheduled_backups.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn connection_refused(&self, listener: &'static str) {
        self.0.connections_refused.get_or_create(&ListenerLabels { listener }).inc();
    }

    /// The text exposition (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.0.registry);
        text
    }
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// One client call being timed.
pub struct CallTimer {
    metrics: Metrics,
    api: &'static str,
    operation: &'static str,
    started: Instant,
    done: bool,
}

impl CallTimer {
    /// The call ended with `outcome` (`None`: ok).
    pub fn finish(mut self, outcome: Option<tonic::Code>) {
        self.record(outcome.map_or("ok", code_name));
    }

    fn record(&mut self, outcome: &'static str) {
        self.done = true;
        let m = &self.metrics.0;
        let labels = RequestLabels { api: self.api, operation: self.operation, outcome };
        m.requests.get_or_create(&labels).inc();
        let labels = OperationLabels { api: self.api, operation: self.operation };
        m.request_seconds.get_or_create(&labels).observe(self.started.elapsed().as_secs_f64());
        if self.operation == "execute" {
            m.proposals_pending.dec();
            if outcome != "ok" {
                m.proposals_failed.inc();
            }
        }
    }
}

impl Drop for CallTimer {
    fn drop(&mut self) {
        if !self.done {
            self.record("cancelled");
        }
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// An open connection, counted until dropped.
pub struct ConnectionGauge {
    metrics: Metrics,
    listener: &'static str,
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.metrics.0.connections.get_or_create(&ListenerLabels { listener: self.listener }).dec();
    }
}

/// The raft log's disk, with its fsyncs timed.
pub struct TimedDisk<D> {
    disk: D,
    metrics: Metrics,
}

impl<D> TimedDisk<D> {
    pub fn new(disk: D, metrics: Metrics) -> Self {
        Self { disk, metrics }
    }
}

impl<D: Disk> Disk for TimedDisk<D> {
    fn list(&self) -> Result<Vec<String>, DiskError> {
        self.disk.list()
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, DiskError> {
        self.disk.read(name)
    }

    fn read_at(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, DiskError> {
        self.disk.read_at(name, offset, len)
    }

    fn create(&mut self, name: &str) -> Result<(), DiskError> {
        self.disk.create(name)
    }

    fn append(&mut self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        self.disk.append(name, data)
    }

    fn truncate(&mut self, name: &str, len: u64) -> Result<(), DiskError> {
        self.disk.truncate(name, len)
    }

    fn sync(&mut self, name: &str) -> Result<(), DiskError> {
        let started = Instant::now();
        let result = self.disk.sync(name);
        self.metrics.0.wal_fsync.observe(started.elapsed().as_secs_f64());
        result
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), DiskError> {
        self.disk.rename(from, to)
    }

    fn remove(&mut self, name: &str) -> Result<(), DiskError> {
        self.disk.remove(name)
    }

    fn sync_dir(&mut self) -> Result<(), DiskError> {
        self.disk.sync_dir()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_move_and_encode() {
        let metrics = Metrics::new();
        metrics.call(Api::Http, "execute").finish(None);
        metrics.call(Api::Grpc, "query").finish(Some(tonic::Code::PermissionDenied));
        drop(metrics.call(Api::Grpc, "execute"));
        metrics.observe_leader(Some(1));
        metrics.observe_leader(Some(1));
        metrics.observe_leader(None);
        metrics.observe_leader(Some(2));
        let text = metrics.encode();
        for line in [
            "deeb_requests_total{api=\"http\",operation=\"execute\",outcome=\"ok\"} 1",
            "deeb_requests_total{api=\"grpc\",operation=\"query\",outcome=\"permission_denied\"} 1",
            "deeb_requests_total{api=\"grpc\",operation=\"execute\",outcome=\"cancelled\"} 1",
            "deeb_server_proposals_failed_total 1",
            "deeb_server_proposals_pending 0",
            "deeb_server_leader_changes_seen_total 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
