//! A deterministic in-process cluster: real `Node`s on `MemDisk`s, a seeded
//! network that drops, delays and partitions, and crash/restart with
//! unsynced writes lost. Everything derives from one seed, and every wait has
//! a bound. (In the spirit of quinn-proto's `Pair` and raft-rs's `Network`.)

#![allow(dead_code)] // Each test binary uses a different part of it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use deeb_core::disk::MemDisk;
use deeb_core::node::{BatchToExecute, EntriesToApply, SnapshotReceiver, SnapshotToInstall};
use deeb_core::sql::SqliteStateMachine;
use deeb_core::{
    AdminError, ClientToken, Config, Consistency, MemberChange, Node, NodeId, Output, ReadError, Role, WriteError,
    WriteOutcome,
};
use deeb_proto::{value, Row, Statement, Value};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Simulated time advances in steps of this.
pub const STEP: Duration = Duration::from_millis(5);

pub struct Slot {
    pub node: Option<Node<MemDisk>>,
    pub disk: MemDisk,
    pub data_dir: PathBuf,
    initial: Vec<(NodeId, String)>,
    /// Jobs away on this node's worker (with `work_time`), with when they
    /// are done.
    jobs: Vec<(Duration, Job)>,
}

/// A job a node handed to its worker, held while the worker "runs" it.
enum Job {
    Batch(BatchToExecute<SqliteStateMachine>),
    Apply(EntriesToApply<SqliteStateMachine>),
    Install(SnapshotToInstall<SqliteStateMachine>),
}

/// What a client got back.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Write(Result<WriteOutcome, WriteError>),
    ReadReady,
    ReadFailed(ReadError),
    Admin(Result<(), AdminError>),
}

struct InFlight {
    sent_at: Duration,
    deliver_at: Duration,
    from: u64,
    to: u64,
    messages: Vec<Vec<u8>>,
}

pub struct Cluster {
    pub slots: BTreeMap<u64, Slot>,
    pub now: Duration,
    pub rng: SmallRng,
    pub replies: HashMap<ClientToken, Reply>,
    /// Every (term, leader) pair ever observed: election safety.
    pub leaders_by_term: BTreeMap<u64, u64>,
    pub drop_rate: f64,
    pub delay_max: Duration,
    /// How long a leader batch or an apply run takes on a node's worker
    /// (zero: done inline, at once); the node goes on meanwhile.
    pub work_time: Duration,
    /// Snapshot streams started, over the cluster's life.
    pub snapshots_sent: usize,
    cut: BTreeSet<(u64, u64)>,
    /// Nodes that neither run nor receive (their messages wait).
    paused: BTreeSet<u64>,
    in_flight: Vec<InFlight>,
    next_token: u64,
    seed: u64,
    configure: fn(&mut Config),
    _dir: tempfile::TempDir,
}

pub fn default_config(_: &mut Config) {}

impl Cluster {
    pub fn new(size: u64, seed: u64) -> Self {
        Self::with_config(size, seed, default_config)
    }

    pub fn with_config(size: u64, seed: u64, configure: fn(&mut Config)) -> Self {
        Self::build(size, seed, configure, None)
    }

    /// A new cluster whose nodes were seeded from the SQLite file at
    /// `source` (`deeb restore --bootstrap` on every node) before they start.
    pub fn seeded(size: u64, seed: u64, source: &std::path::Path) -> Self {
        Self::build(size, seed, default_config, Some(source))
    }

    fn build(size: u64, seed: u64, configure: fn(&mut Config), source: Option<&std::path::Path>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let initial: Vec<(NodeId, String)> = (1..=size).map(|id| (NodeId(id), format!("node-{id}:7000"))).collect();
        let mut cluster = Self {
            slots: BTreeMap::new(),
            now: Duration::ZERO,
            rng: SmallRng::seed_from_u64(seed),
            replies: HashMap::new(),
            leaders_by_term: BTreeMap::new(),
            drop_rate: 0.0,
            delay_max: Duration::from_millis(10),
            work_time: Duration::ZERO,
            snapshots_sent: 0,
            cut: BTreeSet::new(),
            paused: BTreeSet::new(),
            in_flight: Vec::new(),
            next_token: 0,
            seed,
            configure,
            _dir: dir,
        };
        for id in 1..=size {
            if let Some(source) = source {
                let data_dir = cluster._dir.path().join(format!("node-{id}"));
                deeb_core::node::seed_data_dir(NodeId(id), &data_dir, source, &initial).expect("seeds");
            }
            cluster.add_slot(id, initial.clone());
        }
        cluster
    }

    /// Creates a node's disk and data directory and starts it. A node that
    /// will join passes no initial members.
    pub fn add_slot(&mut self, id: u64, initial: Vec<(NodeId, String)>) {
        let data_dir = self._dir.path().join(format!("node-{id}"));
        let slot = Slot { node: None, disk: MemDisk::new(), data_dir, initial, jobs: Vec::new() };
        self.slots.insert(id, slot);
        self.start(id);
    }

    pub fn config(&self, id: u64) -> Config {
        let mut config = Config::new(NodeId(id));
        config.seed = self.seed.wrapping_mul(31).wrapping_add(id);
        (self.configure)(&mut config);
        config
    }

    pub fn start(&mut self, id: u64) {
        let config = self.config(id);
        let slot = self.slots.get_mut(&id).expect("known node");
        assert!(slot.node.is_none(), "node {id} already running");
        let node = Node::open(config, slot.disk.clone(), &slot.data_dir, &slot.initial, self.now)
            .unwrap_or_else(|error| panic!("node {id} failed to open: {error}"));
        slot.node = Some(node);
    }

    /// Kills a node: unsynced log writes are kept, dropped or torn.
    pub fn crash(&mut self, id: u64) {
        self.crash_keeping_messages(id);
        self.in_flight.retain(|message| message.to != id && message.from != id);
    }

    /// Kills a node but leaves the messages to and from it in flight: what
    /// a network still holds is delivered to the restarted node.
    pub fn crash_keeping_messages(&mut self, id: u64) {
        let slot = self.slots.get_mut(&id).expect("known node");
        if let Some(node) = slot.node.take() {
            let disk = node.into_disk();
            disk.crash(self.rng.gen());
        }
        // The process died with its worker: the state machine it held too.
        slot.jobs.clear();
        self.paused.remove(&id);
    }

    pub fn restart(&mut self, id: u64) {
        self.crash(id);
        self.start(id);
    }

    /// Where node `id` keeps its files (its SQLite database is `state.db`).
    pub fn data_dir(&self, id: u64) -> &std::path::Path {
        &self.slots[&id].data_dir
    }

    pub fn node(&self, id: u64) -> &Node<MemDisk> {
        self.slots[&id].node.as_ref().expect("node is running")
    }

    pub fn node_mut(&mut self, id: u64) -> &mut Node<MemDisk> {
        self.slots.get_mut(&id).and_then(|slot| slot.node.as_mut()).expect("node is running")
    }

    pub fn running(&self) -> Vec<u64> {
        self.slots.iter().filter(|(_, slot)| slot.node.is_some()).map(|(id, _)| *id).collect()
    }

    /// Cuts every link between the two groups (both directions).
    pub fn partition(&mut self, left: &[u64], right: &[u64]) {
        for &a in left {
            for &b in right {
                self.cut.insert((a, b));
                self.cut.insert((b, a));
            }
        }
    }

    pub fn isolate(&mut self, id: u64) {
        let others: Vec<u64> = self.slots.keys().copied().filter(|&other| other != id).collect();
        self.partition(&[id], &others);
    }

    pub fn heal(&mut self) {
        self.cut.clear();
        self.drop_rate = 0.0;
    }

    fn token(&mut self) -> ClientToken {
        self.next_token += 1;
        ClientToken(self.next_token)
    }

    // --- time ----------------------------------------------------------------

    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.step();
        }
    }

    /// Runs until `done` holds; panics past `bound` of simulated time.
    pub fn run_until(&mut self, bound: Duration, what: &str, mut done: impl FnMut(&mut Self) -> bool) {
        let end = self.now + bound;
        while !done(self) {
            assert!(self.now < end, "seed {}: not reached within {bound:?}: {what}", self.seed);
            self.step();
        }
    }

    /// Stops running node `id` as SIGSTOP would: no ticks, and messages to
    /// it wait until [`Cluster::resume`].
    pub fn pause(&mut self, id: u64) {
        self.paused.insert(id);
    }

    /// True if messages node `id` sent are still in flight.
    pub fn has_in_flight_from(&self, id: u64) -> bool {
        self.in_flight.iter().any(|message| message.from == id)
    }

    pub fn resume(&mut self, id: u64) {
        self.paused.remove(&id);
    }

    /// Delivers to `id` now the messages waiting for it that were sent
    /// before `sent_before` (what a paused process finds first in its
    /// socket when it wakes).
    pub fn deliver_sent_before(&mut self, id: u64, sent_before: Duration) {
        let (now_due, rest): (Vec<InFlight>, Vec<InFlight>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|message| message.to == id && message.sent_at < sent_before);
        self.in_flight = rest;
        self.deliver(now_due);
    }

    pub fn step(&mut self) {
        self.now += STEP;
        self.finish_due_jobs();
        self.deliver_due();
        let awake: Vec<u64> = self.running().into_iter().filter(|id| !self.paused.contains(id)).collect();
        for id in awake {
            let now = self.now;
            let node = self.node_mut(id);
            if node.poll_timeout() <= now {
                node.handle_timeout(now);
            }
            self.drain(id);
        }
        self.observe_leaders();
    }

    fn deliver_due(&mut self) {
        let now = self.now;
        let paused = &self.paused;
        let (due, later): (Vec<InFlight>, Vec<InFlight>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|message| message.deliver_at <= now && !paused.contains(&message.to));
        self.in_flight = later;
        self.deliver(due);
    }

    fn deliver(&mut self, messages: Vec<InFlight>) {
        let now = self.now;
        for message in messages {
            let alive = self.slots.get(&message.to).is_some_and(|slot| slot.node.is_some());
            if !alive || self.cut.contains(&(message.from, message.to)) {
                continue;
            }
            let node = self.node_mut(message.to);
            node.step(now, &message.messages).expect("peer messages from real nodes decode");
            self.drain(message.to);
        }
    }

    /// Carries out a node's outputs.
    pub fn drain(&mut self, id: u64) {
        while let Some(output) = self.slots.get_mut(&id).and_then(|slot| slot.node.as_mut()).and_then(Node::poll_output)
        {
            match output {
                Output::Send { to, messages } => self.send(id, to.0, messages),
                Output::SendSnapshot { to, header } => self.stream_snapshot(id, to.0, header),
                // Inline: the deterministic harness is its own worker.
                Output::ExecuteBatch => {
                    let batch = self.node_mut(id).batch_to_execute().expect("an announced batch is there to take");
                    self.hand_to_worker(id, Job::Batch(batch));
                }
                Output::ApplyEntries => {
                    let entries = self.node_mut(id).entries_to_apply().expect("announced entries are there to take");
                    self.hand_to_worker(id, Job::Apply(entries));
                }
                Output::InstallSnapshot => {
                    let snapshot = self.node_mut(id).snapshot_to_install().expect("an announced snapshot to install");
                    self.hand_to_worker(id, Job::Install(snapshot));
                }
                Output::RemoveFile { path } => std::fs::remove_file(path).expect("a file the node hands over"),
                Output::TakeSnapshot => {
                    let now = self.now;
                    let node = self.node_mut(id);
                    let snapshot = node.snapshot_to_take().expect("an announced snapshot is there to take");
                    node.snapshot_taken(now, snapshot.take());
                }
                Output::WriteDone { token, result } => {
                    self.replies.insert(token, Reply::Write(result));
                }
                Output::ReadReady { token } => {
                    self.replies.insert(token, Reply::ReadReady);
                }
                Output::ReadFailed { token, error } => {
                    self.replies.insert(token, Reply::ReadFailed(error));
                }
                Output::AdminDone { token, result } => {
                    self.replies.insert(token, Reply::Admin(result));
                }
                Output::Stopped { reason } => panic!("seed {}: node {id} stopped: {reason}", self.seed),
            }
        }
    }

    /// True while node `id` has a snapshot install away on its worker.
    pub fn installing(&self, id: u64) -> bool {
        self.slots[&id].jobs.iter().any(|(_, job)| matches!(job, Job::Install(_)))
    }

    /// Runs a worker job at once, or (with `work_time`) holds it until
    /// then.
    fn hand_to_worker(&mut self, id: u64, job: Job) {
        if self.work_time.is_zero() {
            self.finish_job(id, job);
        } else {
            let due = self.now + self.work_time;
            self.slots.get_mut(&id).expect("known node").jobs.push((due, job));
        }
    }

    fn finish_job(&mut self, id: u64, job: Job) {
        let now = self.now;
        let node = self.node_mut(id);
        match job {
            Job::Batch(batch) => node.batch_executed(now, batch.execute()),
            Job::Apply(entries) => node.entries_applied(now, entries.apply()),
            Job::Install(snapshot) => node.snapshot_installed(now, snapshot.install()),
        }
    }

    /// Gives back the jobs whose time is up (a paused node's wait).
    fn finish_due_jobs(&mut self) {
        let now = self.now;
        let ids: Vec<u64> = self.slots.keys().copied().filter(|id| !self.paused.contains(id)).collect();
        for id in ids {
            let slot = self.slots.get_mut(&id).expect("listed");
            let (due, later): (Vec<_>, Vec<_>) =
                std::mem::take(&mut slot.jobs).into_iter().partition(|(at, _)| *at <= now);
            slot.jobs = later;
            for (_, job) in due {
                self.finish_job(id, job);
                self.drain(id);
            }
        }
    }

    fn send(&mut self, from: u64, to: u64, messages: Vec<Vec<u8>>) {
        for message in messages {
            if self.rng.gen_bool(self.drop_rate) {
                continue;
            }
            let delay = self.rng.gen_range(Duration::ZERO..=self.delay_max);
            self.in_flight.push(InFlight {
                sent_at: self.now,
                deliver_at: self.now + delay,
                from,
                to,
                messages: vec![message],
            });
        }
    }

    /// Streams a snapshot file in small chunks, as a host would.
    fn stream_snapshot(&mut self, from: u64, to: u64, header: deeb_proto::SnapshotHeader) {
        self.snapshots_sent += 1;
        let reachable = !self.cut.contains(&(from, to)) && self.slots.get(&to).is_some_and(|s| s.node.is_some());
        let delivered = reachable && self.try_stream(from, to, header);
        self.node_mut(from).report_snapshot(NodeId(to), delivered);
        self.drain(from);
        if delivered {
            self.drain(to);
        }
    }

    fn try_stream(&mut self, from: u64, to: u64, header: deeb_proto::SnapshotHeader) -> bool {
        let Some(file) = self.node(from).snapshot_file(header.index) else { return false };
        let Ok(mut receiver): Result<SnapshotReceiver, _> = self.node_mut(to).snapshot_receiver(header) else {
            return false;
        };
        let mut offset = 0;
        let mut reader = file.open().expect("snapshot file readable");
        loop {
            let chunk = reader.next_chunk(64 * 1024).expect("snapshot file readable");
            if chunk.is_empty() {
                break;
            }
            receiver.write_chunk(offset, &chunk).expect("chunks in order");
            offset += chunk.len() as u64;
        }
        let received = receiver.finish().expect("complete snapshot checks out");
        let now = self.now;
        self.node_mut(to).install_received(now, received);
        true
    }

    fn observe_leaders(&mut self) {
        for id in self.running() {
            let status = self.node(id).status();
            if status.role == Role::Leader {
                let previous = self.leaders_by_term.insert(status.term.0, id);
                assert!(
                    previous.is_none_or(|p| p == id),
                    "seed {}: two leaders in term {}: {previous:?} and {id}",
                    self.seed,
                    status.term
                );
            }
        }
    }

    // --- clients -------------------------------------------------------------

    /// The leader with the highest term among running nodes.
    pub fn leader(&self) -> Option<u64> {
        self.running()
            .into_iter()
            .map(|id| (self.node(id).status(), id))
            .filter(|(status, _)| status.role == Role::Leader)
            .max_by_key(|(status, _)| status.term)
            .map(|(_, id)| id)
    }

    pub fn wait_leader(&mut self) -> u64 {
        self.run_until(Duration::from_secs(30), "a leader", |c| c.leader().is_some());
        self.leader().expect("just checked")
    }

    /// Submits a write to `id`; the token's reply arrives later.
    pub fn submit_write(&mut self, id: u64, statements: Vec<Statement>) -> Result<ClientToken, WriteError> {
        let token = self.token();
        let now = self.now;
        self.node_mut(id).submit_write(now, token, statements)?;
        self.drain(id);
        Ok(token)
    }

    /// Submits a write with an idempotency key to node `id`.
    pub fn submit_keyed_write(
        &mut self,
        id: u64,
        statements: Vec<Statement>,
        key: &str,
    ) -> Result<ClientToken, WriteError> {
        let token = self.token();
        let now = self.now;
        self.node_mut(id).submit_keyed_write(now, token, statements, Some(key.to_owned()))?;
        self.drain(id);
        Ok(token)
    }

    /// Submits a restore piece to node `id`.
    pub fn submit_restore_part(&mut self, id: u64, part: deeb_proto::RestorePart) -> Result<ClientToken, WriteError> {
        let token = self.token();
        let now = self.now;
        self.node_mut(id).submit_restore_part(now, token, part)?;
        self.drain(id);
        Ok(token)
    }

    /// Restores the file `bytes` through the current leader in pieces of
    /// `piece` bytes, each waited for: the index of the last, or the
    /// first error.
    pub fn restore(&mut self, id: &str, bytes: &[u8], piece: usize) -> Result<u64, WriteError> {
        let mut index = 0;
        for at in 0..bytes.len().div_ceil(piece).max(1) {
            let part = restore_part(id, bytes, piece, at);
            let leader = self.wait_leader();
            let token = self.submit_restore_part(leader, part)?;
            match self.wait_reply(token, Duration::from_secs(30)) {
                Reply::Write(Ok(outcome)) => index = outcome.index.0,
                Reply::Write(Err(error)) => return Err(error),
                other => panic!("unexpected reply {other:?}"),
            }
        }
        Ok(index)
    }

    pub fn wait_reply(&mut self, token: ClientToken, bound: Duration) -> Reply {
        self.run_until(bound, "a reply", |c| c.replies.contains_key(&token));
        self.replies.remove(&token).expect("just checked")
    }

    /// Writes through the current leader, retrying on leader changes.
    pub fn write(&mut self, statements: Vec<Statement>) -> WriteOutcome {
        for _attempt in 0..50 {
            let leader = self.wait_leader();
            let Ok(token) = self.submit_write(leader, statements.clone()) else {
                self.run_for(Duration::from_millis(100));
                continue;
            };
            match self.wait_reply(token, Duration::from_secs(30)) {
                Reply::Write(Ok(outcome)) => return outcome,
                Reply::Write(Err(WriteError::Statement(error))) => panic!("statement failed: {error}"),
                other => tracing::debug!(?other, "write retried"),
            }
        }
        panic!("seed {}: write not acknowledged in 50 attempts", self.seed)
    }

    pub fn execute(&mut self, sql: &str) -> WriteOutcome {
        self.write(vec![statement(sql)])
    }

    /// Reads on node `id` at `consistency`.
    /// Asks node `id` for a read without waiting for it.
    pub fn submit_read(&mut self, id: u64, consistency: Consistency) -> Result<ClientToken, ReadError> {
        let token = self.token();
        let now = self.now;
        self.node_mut(id).submit_read(now, token, consistency)?;
        self.drain(id);
        Ok(token)
    }

    pub fn read(&mut self, id: u64, consistency: Consistency, sql: &str) -> Result<Vec<Row>, ReadError> {
        let token = self.submit_read(id, consistency)?;
        match self.wait_reply(token, Duration::from_secs(30)) {
            Reply::ReadReady => Ok(query(self.node(id), sql)),
            Reply::ReadFailed(error) => Err(error),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    /// Proposes a membership change at `id` without waiting for it.
    pub fn submit_admin(&mut self, id: u64, changes: Vec<MemberChange>) -> Result<ClientToken, AdminError> {
        let token = self.token();
        let now = self.now;
        self.node_mut(id).change_membership(now, token, changes)?;
        self.drain(id);
        Ok(token)
    }

    pub fn admin(&mut self, id: u64, changes: Vec<MemberChange>) -> Result<(), AdminError> {
        let token = self.submit_admin(id, changes)?;
        match self.wait_reply(token, Duration::from_secs(30)) {
            Reply::Admin(result) => result,
            other => panic!("unexpected reply {other:?}"),
        }
    }

    pub fn transfer_leader(&mut self, id: u64, target: u64) -> Result<(), AdminError> {
        let token = self.token();
        let now = self.now;
        self.node_mut(id).transfer_leader(now, token, NodeId(target))?;
        self.drain(id);
        match self.wait_reply(token, Duration::from_secs(30)) {
            Reply::Admin(result) => result,
            other => panic!("unexpected reply {other:?}"),
        }
    }

    /// Runs until every running node has applied the same index, then
    /// returns each node's (applied index, digest).
    pub fn converge(&mut self) -> BTreeMap<u64, (u64, u64)> {
        self.run_until(Duration::from_secs(60), "replicas converge", |c| {
            let applied: BTreeSet<u64> = c.running().iter().map(|&id| c.node(id).status().applied_index.0).collect();
            let commit = c.running().iter().map(|&id| c.node(id).status().commit_index.0).max().unwrap_or(0);
            applied.len() == 1 && applied.first() == Some(&commit)
        });
        self.running()
            .into_iter()
            .map(|id| {
                let (index, digest) = self.node(id).digest().expect("digest");
                (id, (index.0, digest))
            })
            .collect()
    }

    pub fn assert_converged(&mut self) -> u64 {
        let digests = self.converge();
        let distinct: BTreeSet<(u64, u64)> = digests.values().copied().collect();
        assert_eq!(distinct.len(), 1, "seed {}: replicas differ: {digests:?}", self.seed);
        digests.values().next().expect("at least one node").1
    }
}

/// Piece `at` of the file `bytes` cut in pieces of `piece` bytes.
pub fn restore_part(id: &str, bytes: &[u8], piece: usize, at: usize) -> deeb_proto::RestorePart {
    let count = bytes.len().div_ceil(piece).max(1);
    let data = bytes.chunks(piece).nth(at).unwrap_or_default().to_vec();
    let last = at + 1 == count;
    deeb_proto::RestorePart {
        id: id.to_owned(),
        offset: (at * piece) as u64,
        data,
        last,
        total_bytes: if last { bytes.len() as u64 } else { 0 },
        crc32c: if last { crc32c::crc32c(bytes) } else { 0 },
    }
}

pub fn statement(sql: &str) -> Statement {
    Statement { sql: sql.to_owned(), params: Vec::new(), named_params: Vec::new() }
}

pub fn with_params(sql: &str, params: Vec<Value>) -> Statement {
    Statement { sql: sql.to_owned(), params, named_params: Vec::new() }
}

pub fn integer(value: i64) -> Value {
    Value { kind: Some(value::Kind::Integer(value)) }
}

pub fn text(value: &str) -> Value {
    Value { kind: Some(value::Kind::Text(value.to_owned())) }
}

/// Runs a query on a node's reader and collects every row.
pub fn query(node: &Node<MemDisk>, sql: &str) -> Vec<Row> {
    let reader = node.reader().expect("reader opens");
    let mut rows = Vec::new();
    reader
        .query(&statement(sql), 1000, 1 << 20, &mut |chunk| {
            rows.extend(chunk.rows);
            true
        })
        .unwrap_or_else(|error| panic!("query {sql:?} failed: {error}"));
    rows
}

pub fn integer_of(row: &Row, column: usize) -> i64 {
    match row.values[column].kind {
        Some(value::Kind::Integer(value)) => value,
        ref other => panic!("column {column} is {other:?}, not an integer"),
    }
}
