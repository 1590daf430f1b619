//! The faults madsim lacks, through deeb-server's hooks: a clock per node
//! that drifts and jumps, duplicated and held-back peer batches, and named
//! crash points (a node killed just after it promised a peer something
//! durable). Also the god's-eye observer that feeds the election and
//! committed-entry checkers from node events.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deeb_core::{NodeEvent, NodeId};
use deeb_server::{Delivery, Hooks, Job, NodeClock, TransportFaults, WorkTime};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::swarm::Swarm;
use crate::checker::log_matching::LogCopy;
use crate::checker::read_index::ReadIndexes;
use crate::checker::{CommittedEntry, LeaderObserved, VoteObserved};

/// A crash a node asked for at one of its crash points. The fault phase
/// carries it out (it owns which nodes are up).
#[derive(Clone, Debug)]
pub struct CrashRequest {
    pub node: u64,
    /// Power loss at the crash point: every node goes down.
    pub whole_cluster: bool,
    /// Time for the messages just sent to leave before the crash.
    pub kill_after: Duration,
    pub down_for: Duration,
    /// At a crash point of the node's log disk.
    pub at_disk_operation: bool,
}

/// What the nodes reported, for the checkers.
#[derive(Default)]
pub struct Observations {
    pub leaders: Vec<LeaderObserved>,
    pub votes: Vec<VoteObserved>,
    pub committed: Vec<CommittedEntry>,
    /// Each node's log as its events describe it.
    pub logs: BTreeMap<u64, LogCopy>,
    /// The first Log Matching violation seen while faults ran.
    pub log_violation: Option<crate::checker::Violation>,
    pub read_indexes: ReadIndexes,
}

/// Shared by every node's hooks. madsim runs one task at a time, so draws
/// from the one generator happen in a reproducible order.
pub struct Chaos {
    state: Mutex<ChaosState>,
    crashes: mpsc::UnboundedSender<CrashRequest>,
    swarm: Swarm,
    epoch: Instant,
}

struct ChaosState {
    rng: SmallRng,
    /// The state machine's crash points draw from their own generator, so
    /// that adding them left the older faults' draws (and the seeds that
    /// catch each mutant) as they were.
    state_machine_rng: SmallRng,
    observations: Observations,
    /// Crash points still allowed at votes and at append acknowledgements
    /// (counted apart: acknowledgements are far more frequent).
    vote_crashes_left: usize,
    ack_crashes_left: usize,
    /// Crash points still allowed right after a snapshot install, and
    /// right after a log compaction (counted apart: compactions are far
    /// more frequent, and used to spend every crash before a rare install
    /// came).
    install_crashes_left: usize,
    compaction_crashes_left: usize,
    /// Nodes that reached a crash point of their log disk.
    disk_crashes: usize,
    /// Nodes about to crash (`late_across_restarts`): messages sent to
    /// them in the `Doom`'s deaf end arrive after they are back.
    doomed: BTreeMap<u64, Doom>,
    /// Draws how much of a short run is deaf (its own stream, so that
    /// seeds without short runs draw as before).
    deaf_rng: SmallRng,
    /// Each node's clock rate, where clocks drift.
    clock_rates: BTreeMap<u64, f64>,
}

impl Chaos {
    pub fn new(swarm: &Swarm, seed: u64) -> (Arc<Self>, mpsc::UnboundedReceiver<CrashRequest>) {
        let (crashes, requests) = mpsc::unbounded_channel();
        let (vote_crashes_left, ack_crashes_left) =
            if swarm.crash_points { (VOTE_CRASHES_PER_SEED_MAX, ACK_CRASHES_PER_SEED_MAX) } else { (0, 0) };
        let snapshot_crash_points = swarm.crash_points || swarm.state_machine_crash_points;
        let snapshot_crashes_left = if snapshot_crash_points { SNAPSHOT_CRASHES_PER_SEED_MAX } else { 0 };
        let (install_crashes_left, compaction_crashes_left) = (snapshot_crashes_left, snapshot_crashes_left);
        let state = ChaosState {
            rng: SmallRng::seed_from_u64(seed ^ CHAOS_SALT),
            state_machine_rng: SmallRng::seed_from_u64(seed ^ STATE_MACHINE_SALT),
            observations: Observations::default(),
            vote_crashes_left,
            ack_crashes_left,
            install_crashes_left,
            compaction_crashes_left,
            disk_crashes: 0,
            doomed: BTreeMap::new(),
            deaf_rng: SmallRng::seed_from_u64(seed ^ DEAF_SALT),
            clock_rates: BTreeMap::new(),
        };
        let chaos = Self { state: Mutex::new(state), crashes, swarm: swarm.clone(), epoch: Instant::now() };
        (Arc::new(chaos), requests)
    }

    /// The hooks node `id` runs with (the same across its restarts).
    pub fn hooks(self: &Arc<Self>, id: u64) -> Hooks {
        let observer = self.clone();
        let clock = self.draw_clock(id);
        Hooks {
            observer: Some(Arc::new(move |node: NodeId, event: &NodeEvent| observer.observe(node.0, event))),
            clock: clock.map(|clock| Arc::new(clock) as Arc<dyn NodeClock>),
            transport: self.swarm.messes_with_messages().then(|| self.clone() as Arc<dyn TransportFaults>),
            work_time: (!self.swarm.work_time_max.is_zero()).then(|| self.clone() as Arc<dyn WorkTime>),
        }
    }

    /// A draw in `0..n` (n > 0) from the shared generator.
    pub fn pick(&self, n: usize) -> usize {
        self.lock().rng.gen_range(0..n)
    }

    /// The leader of the highest term any node reported leading.
    pub fn latest_leader(&self) -> Option<u64> {
        self.lock().observations.leaders.iter().max_by_key(|leader| leader.term).map(|leader| leader.node)
    }

    /// The node whose clock runs slowest, where clocks drift: as leader,
    /// its lease and its quorum check last longest in real time.
    pub fn slowest_clock(&self) -> Option<u64> {
        let state = self.lock();
        state.clock_rates.iter().min_by(|a, b| a.1.total_cmp(b.1)).map(|(&id, _)| id)
    }

    /// Checks Log Matching over the logs as they are now; keeps the first
    /// violation.
    pub fn check_logs(&self) {
        let mut state = self.lock();
        if state.observations.log_violation.is_none() {
            if let Err(violation) = crate::checker::log_matching::check_log_matching(&state.observations.logs) {
                state.observations.log_violation = Some(violation);
            }
        }
    }

    pub fn take_observations(&self) -> Observations {
        std::mem::take(&mut self.lock().observations)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ChaosState> {
        self.state.lock().expect("chaos lock")
    }

    fn observe(&self, node: u64, event: &NodeEvent) {
        let mut state = self.lock();
        match *event {
            NodeEvent::BecameLeader { term } => {
                state.observations.leaders.push(LeaderObserved { term, node });
            }
            NodeEvent::ReadIndexAsked { token } => state.observations.read_indexes.asked(node, token),
            NodeEvent::ReadIndexConfirmed { token, index } => {
                state.observations.read_indexes.confirmed(node, token, index);
            }
            NodeEvent::Applied { index, term, checksum } => {
                state.observations.read_indexes.applied(index);
                let digest = (term << 32) | u64::from(checksum);
                state.observations.committed.push(CommittedEntry { node, index, digest });
            }
            NodeEvent::LogReset { first_index, ref entries } => {
                let log = state.observations.logs.entry(node).or_default();
                log.clear();
                log.extend(entries.iter().filter(|(index, ..)| *index >= first_index).map(|&(i, t, c)| (i, (t, c))));
            }
            NodeEvent::LogAppended { ref entries, last_index } => {
                let log = state.observations.logs.entry(node).or_default();
                let overwrites = entries.first().is_some_and(|(first, ..)| log.contains_key(first));
                log.extend(entries.iter().map(|&(index, term, crc)| (index, (term, crc))));
                log.retain(|index, _| *index <= last_index);
                // A stale suffix left behind entries overwritten in place
                // may be overwritten again at the next append: check when
                // it happens, against every other log.
                if overwrites && state.observations.log_violation.is_none() {
                    let logs = &state.observations.logs;
                    let checked = crate::checker::log_matching::check_log_matching_of(logs, node);
                    state.observations.log_violation = checked.err();
                }
            }
            NodeEvent::SnapshotInstalled { .. } | NodeEvent::Compacted { .. } => {
                let installed = matches!(event, NodeEvent::SnapshotInstalled { .. });
                let (rate, left) = match installed {
                    true => (CRASH_ON_INSTALL_RATE, state.install_crashes_left),
                    false => (CRASH_ON_COMPACTION_RATE, state.compaction_crashes_left),
                };
                if left == 0 || !state.state_machine_rng.gen_bool(rate) {
                    return;
                }
                match installed {
                    true => state.install_crashes_left -= 1,
                    false => state.compaction_crashes_left -= 1,
                }
                // Down at once, before the state machine syncs anything else.
                let request = CrashRequest {
                    node,
                    whole_cluster: false,
                    kill_after: Duration::ZERO,
                    down_for: Duration::from_millis(state.state_machine_rng.gen_range(1..40)),
                    at_disk_operation: false,
                };
                let _ = self.crashes.send(request);
            }
            NodeEvent::Promised { term, voted_for } => {
                if let Some(candidate) = voted_for {
                    state.observations.votes.push(VoteObserved { node, term, candidate });
                }
                let vote = voted_for.is_some();
                let (rate, left) = match vote {
                    true => (CRASH_ON_VOTE_RATE, state.vote_crashes_left),
                    false => (CRASH_ON_ACK_RATE, state.ack_crashes_left),
                };
                if left == 0 || !state.rng.gen_bool(rate) {
                    return;
                }
                match vote {
                    true => state.vote_crashes_left -= 1,
                    false => state.ack_crashes_left -= 1,
                }
                let rng = &mut state.rng;
                // A voter back within the election it voted in is what tests
                // that the vote was durable; so is one whose vote was lost
                // with it (the election fails, it stays leaderless longer).
                let down_for = match (vote, rng.gen_bool(0.8)) {
                    (true, true) => rng.gen_range(1..10),
                    (false, true) => rng.gen_range(1..40),
                    (_, false) => rng.gen_range(100..1_000),
                };
                let kill_after_micros = if vote { rng.gen_range(0..1_000) } else { rng.gen_range(0..3_000) };
                let request = CrashRequest {
                    node,
                    whole_cluster: !vote && rng.gen_bool(0.3),
                    kill_after: Duration::from_micros(kill_after_micros),
                    down_for: Duration::from_millis(down_for),
                    at_disk_operation: false,
                };
                let _ = self.crashes.send(request);
            }
        }
    }

    /// Node `id`'s log disk failed at its crash point and the node stopped:
    /// take it down as a crash there and bring it back soon.
    pub fn crash_at_disk_operation(&self, id: u64) {
        let mut state = self.lock();
        state.disk_crashes += 1;
        let down_for = Duration::from_millis(state.rng.gen_range(1..40));
        let request = CrashRequest {
            node: id,
            whole_cluster: false,
            kill_after: Duration::ZERO,
            down_for,
            at_disk_operation: true,
        };
        let _ = self.crashes.send(request);
    }

    /// Node `id` will crash: with `late_across_restarts`, what is sent to
    /// its deaf end arrives after it is back, at its next run.
    pub fn doom(&self, id: u64, doom: Doom) {
        if self.swarm.late_across_restarts {
            self.lock().doomed.insert(id, doom);
        }
    }

    /// The deaf end of a short run that lasts `life` (at least a
    /// millisecond, at most all of it), and how long the next run hears
    /// only what was held from it. The run hears the leader before its deaf
    /// end and asks it for read indexes; the answers to the last of those
    /// reach the next run, whose own requests count from 1 again and wait.
    pub fn deaf_ends(&self, life: Duration) -> (Duration, Duration) {
        let millis = life.as_millis().max(1) as u64;
        let mut state = self.lock();
        let tail = Duration::from_millis(state.deaf_rng.gen_range(1..=millis));
        let next_deaf_for = state.deaf_rng.gen_range(NEXT_RUN_DEAF_MIN..NEXT_RUN_DEAF_MAX);
        (tail, next_deaf_for)
    }

    /// How many nodes reached a crash point of their log disk.
    pub fn disk_crashes(&self) -> usize {
        self.lock().disk_crashes
    }

    /// A drifting, jumping clock for node `id`, if this seed has clock faults.
    fn draw_clock(&self, id: u64) -> Option<SimClock> {
        let swarm = &self.swarm;
        if swarm.lease_violation {
            let rate = if id == SLOW_CLOCK_NODE { SLOW_CLOCK_RATE } else { 1.0 };
            return Some(SimClock { epoch: self.epoch, offset: Duration::ZERO, rate, jumps: Vec::new() });
        }
        if swarm.clock_drift == 0.0 && !swarm.clock_jumps {
            return None;
        }
        let mut rng = SmallRng::seed_from_u64(id ^ self.lock().rng.gen::<u64>());
        let rate = 1.0 + rng.gen_range(-swarm.clock_drift..=swarm.clock_drift);
        self.lock().clock_rates.insert(id, rate);
        let mut jumps = Vec::new();
        if swarm.clock_jumps {
            for _ in 0..rng.gen_range(1..=3) {
                let at = rng.gen_range(Duration::ZERO..swarm.fault_phase);
                let by_millis: i64 = rng.gen_range(-CLOCK_JUMP_MAX_MS..=CLOCK_JUMP_MAX_MS);
                jumps.push((at, by_millis));
            }
        }
        let offset = Duration::from_secs(rng.gen_range(0..1_000_000));
        Some(SimClock { epoch: self.epoch, offset, rate, jumps })
    }
}

/// A node about to crash, for `late_across_restarts`.
#[derive(Clone, Copy, Debug)]
pub struct Doom {
    /// From when messages to it are held for its next run.
    pub deaf_from: Instant,
    /// When it is back.
    pub back_at: Instant,
    /// When its next run starts hearing new messages (at `back_at`, or
    /// later after a short run): it hears only the held ones before.
    pub hears_from: Instant,
}

impl TransportFaults for Chaos {
    fn plan(&self, _from: NodeId, to: NodeId) -> Delivery {
        let swarm = &self.swarm;
        let mut state = self.lock();
        let mut delivery = Delivery::default();
        if let Some(&Doom { deaf_from, back_at, hears_from }) = state.doomed.get(&to.0) {
            let now = Instant::now();
            if deaf_from <= now && now < back_at {
                // Sent to the run that is about to die; delivered to the
                // next, before it hears anything new when it is deaf at first.
                let after_restart = match hears_from - back_at {
                    Duration::ZERO => state.rng.gen_range(Duration::ZERO..LATE_AFTER_RESTART_MAX),
                    deaf_for => state.deaf_rng.gen_range(Duration::ZERO..deaf_for),
                };
                delivery.delay = back_at - now + after_restart;
                return delivery;
            }
            if back_at <= now && now < hears_from {
                // Sent to the next run while it is still deaf.
                delivery.delay = hears_from - now + state.deaf_rng.gen_range(Duration::ZERO..HEARING_JITTER_MAX);
                return delivery;
            }
            if hears_from <= now {
                state.doomed.remove(&to.0);
            }
        }
        let rng = &mut state.rng;
        if swarm.hold_back_rate > 0.0 && rng.gen_bool(swarm.hold_back_rate) {
            delivery.delay = rng.gen_range(Duration::from_millis(1)..MESSAGE_DELAY_MAX);
        }
        if swarm.duplicate_rate > 0.0 && rng.gen_bool(swarm.duplicate_rate) {
            delivery.copies.push(rng.gen_range(Duration::ZERO..MESSAGE_DELAY_MAX));
        }
        delivery
    }
}

impl WorkTime for Chaos {
    fn draw(&self, job: Job) -> Duration {
        let max = self.swarm.work_time_max;
        let mut state = self.lock();
        // Mostly quick, sometimes the whole bound: a statement that runs
        // long. Applying row changes is quick (no SQL runs).
        match job != Job::Apply && state.rng.gen_bool(0.2) {
            true => state.rng.gen_range(Duration::ZERO..=max),
            false => state.rng.gen_range(Duration::ZERO..=max / 20),
        }
    }
}

/// One node's clock: an offset, a rate, and jumps at fixed simulated times.
/// It follows the simulation's time, not the node's uptime, so it keeps its
/// course across restarts.
struct SimClock {
    epoch: Instant,
    offset: Duration,
    rate: f64,
    /// (when, by how many milliseconds, either way).
    jumps: Vec<(Duration, i64)>,
}

impl NodeClock for SimClock {
    fn read(&self, _elapsed: Duration) -> Duration {
        let since_epoch = Instant::now().saturating_duration_since(self.epoch);
        let jumped: i64 = self.jumps.iter().filter(|(at, _)| *at <= since_epoch).map(|(_, by)| by).sum();
        let drifted = since_epoch.mul_f64(self.rate) + self.offset;
        let jump = Duration::from_millis(jumped.unsigned_abs());
        if jumped >= 0 {
            drifted + jump
        } else {
            drifted.saturating_sub(jump)
        }
    }
}

/// Crash points fire at most this often per seed (a node crashes at a
/// promise, or the whole cluster does).
const VOTE_CRASHES_PER_SEED_MAX: usize = 8;
const ACK_CRASHES_PER_SEED_MAX: usize = 4;
/// Votes are rare and matter: crash at many of them.
const CRASH_ON_VOTE_RATE: f64 = 0.8;
/// Append acknowledgements are frequent.
const CRASH_ON_ACK_RATE: f64 = 0.004;
/// Crash points right after a snapshot install (rare: crash at most) or a
/// compaction (every few dozen entries).
const SNAPSHOT_CRASHES_PER_SEED_MAX: usize = 3;
const CRASH_ON_INSTALL_RATE: f64 = 0.7;
const CRASH_ON_COMPACTION_RATE: f64 = 0.1;
/// How long the run after a short one hears only what was held for it.
const NEXT_RUN_DEAF_MIN: Duration = Duration::from_millis(200);
const NEXT_RUN_DEAF_MAX: Duration = Duration::from_millis(1000);
/// What a run sent to while deaf receives, at most this long after it
/// starts hearing.
const HEARING_JITTER_MAX: Duration = Duration::from_millis(5);
/// Messages to a crashed node arrive at most this long after it is back.
const LATE_AFTER_RESTART_MAX: Duration = Duration::from_millis(300);
/// Held-back and duplicated batches arrive at most this late.
const MESSAGE_DELAY_MAX: Duration = Duration::from_millis(300);
const CLOCK_JUMP_MAX_MS: i64 = 2_000;
/// With `Swarm::lease_violation`: this node's clock runs at this rate, far
/// past the drift the lease allows (its half election timeout lasts two and
/// a half of the others' whole ones).
pub const SLOW_CLOCK_NODE: u64 = 1;
const SLOW_CLOCK_RATE: f64 = 0.12;
const CHAOS_SALT: u64 = 0xC4A0_5EED;
const STATE_MACHINE_SALT: u64 = 0x5A7E_3AC1;
const DEAF_SALT: u64 = 0xDEAF_7A11;
