//! One seed: a cluster, clients, a fault phase, a heal phase, and the checks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use madsim::net::NetSim;
use madsim::runtime::Handle;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

use super::cluster::{self, Cluster};
use super::faults::{self, Chaos, CrashRequest, Doom};
use super::mutants::Mutant;
use super::swarm::{Scenario, Swarm};
use super::workload::{self, Client, Recorder, ACCOUNTS, INITIAL_BALANCE};
use crate::checker::history::{Kind, Operation};
use crate::checker::liveness::LivenessObservation;
use crate::checker::{self};

/// What to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub seed: u64,
    pub scenario: Scenario,
    pub nodes: u64,
    pub mutant: Option<Mutant>,
}

/// What one seed found.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    pub swarm: String,
    pub operations: usize,
    /// Of `operations`, those of the SQL workload.
    pub sql_operations: usize,
    pub faults: usize,
    /// Of `faults`, crashes at a disk operation (raft log or SQLite file).
    pub disk_crashes: usize,
    /// Crash points reached in SQLite files, and unsynced changes of
    /// SQLite files that crashes took back.
    pub sqlite_crash_points: usize,
    pub sqlite_changes_undone: usize,
    pub violations: Vec<String>,
    /// A hash of the recorded history: equal for equal runs.
    pub history_hash: u64,
    /// The recorded history, for `replay` to dump.
    pub history: Vec<Operation>,
    /// Operations with a known outcome, and with none (timed out, broke).
    pub determinate: usize,
    pub unknown: usize,
    /// Bounded-stale register reads, and those that were served.
    pub stale_reads: usize,
    pub stale_reads_served: usize,
}

impl RunReport {
    pub fn failed(&self) -> bool {
        !self.violations.is_empty()
    }
}

/// Runs one seed in its own madsim runtime.
pub fn run_seed(options: &RunOptions) -> RunReport {
    let swarm = swarm_of(options);
    let directory = scratch_directory();
    let runtime = madsim::runtime::Runtime::with_seed_and_config(options.seed, runtime_config(&swarm));
    let (options_inner, swarm_inner, path) = (options.clone(), swarm.clone(), directory.path().to_owned());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        runtime.block_on(simulate_bounded(options_inner, swarm_inner, path))
    }));
    match outcome {
        Ok(report) => report,
        Err(panic) => RunReport {
            swarm: swarm.describe(),
            violations: vec![format!("panic: {}", panic_message(&panic))],
            ..RunReport::default()
        },
    }
}

/// Runs one seed twice, each in a fresh madsim runtime on a fresh thread,
/// under madsim's determinism checker (`Runtime::check_determinism`, what
/// `MADSIM_TEST_CHECK_DETERMINISM` turns on): the second run must draw the
/// same random numbers at the same simulated instants as the first, and its
/// history must hash the same. Returns the second run's report. One check at
/// a time: the runs get their options through a static.
///
/// # Errors
///
/// A description when the runs diverge (madsim panics "non-determinism
/// detected at ..."), when a run panics, or when the history hashes differ.
pub fn check_determinism(options: &RunOptions) -> Result<RunReport, String> {
    let _one_at_a_time = DETERMINISM_SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let config = runtime_config(&swarm_of(options));
    *DETERMINISM_OPTIONS.lock().expect("determinism options lock") = Some(options.clone());
    DETERMINISM_HASHES.lock().expect("determinism hashes lock").clear();
    let report = run_twice(options.seed, config, determinism_run)?;
    let hashes = std::mem::take(&mut *DETERMINISM_HASHES.lock().expect("determinism hashes lock"));
    match hashes[..] {
        [first, second] if first == second => Ok(report),
        [first, second] => Err(format!("history hashes differ: {first:016x} then {second:016x}")),
        _ => Err(format!("expected 2 runs, saw {}", hashes.len())),
    }
}

/// Shows that `check_determinism`'s machinery can fail: a run that takes
/// 1 ms more on its second go (state leaking between runs, as a global
/// counter or an unseeded `rand::thread_rng` would; madsim intercepts
/// `SystemTime`, not those) must be reported.
///
/// # Errors
///
/// If the checker accepted the two different runs.
pub fn determinism_canary() -> Result<(), String> {
    match run_twice(0, madsim::Config::default(), drifting_run) {
        Err(divergence) if divergence.contains("non-determinism detected") => Ok(()),
        Err(other) => Err(format!("the canary failed for another reason: {other}")),
        Ok(_) => Err("two runs that differ by 1 ms passed the determinism check".to_owned()),
    }
}

/// The faults a run draws (a scenario mutant changes them).
fn swarm_of(options: &RunOptions) -> Swarm {
    let swarm = Swarm::draw(options.seed, options.scenario, options.nodes);
    match options.mutant {
        Some(Mutant::LeaseBeyondClockBound) => swarm.breaking_the_lease(),
        Some(Mutant::StaleBoundOnLeaderContact) => swarm.lagging_stale_readers(),
        Some(Mutant::ForgetVote) => swarm.contested_elections(),
        Some(Mutant::LeaseReadBeforeApply) => swarm.lease_readers_of_slow_applies(),
        _ => swarm,
    }
}

/// madsim's settings for a seed's swarm (its network's packet loss).
fn runtime_config(swarm: &Swarm) -> madsim::Config {
    let mut config = madsim::Config::default();
    config.net.packet_loss_rate = swarm.packet_loss_rate;
    config
}

/// Runs `run` twice under madsim's determinism checker.
fn run_twice<F>(seed: u64, config: madsim::Config, run: fn() -> F) -> Result<F::Output, String>
where
    F: std::future::Future + 'static,
    F::Output: Send,
{
    let checked = std::panic::catch_unwind(move || madsim::runtime::Runtime::check_determinism(seed, config, run));
    checked.map_err(|panic| format!("a run panicked: {}", panic_message(&panic)))
}

/// One run for `check_determinism`, which wants a plain `fn`: the options
/// come through a static. Each run gets its own scratch directory, as in
/// `run_seed`, and the same simulated-time bound.
fn determinism_run() -> impl std::future::Future<Output = RunReport> {
    let options = DETERMINISM_OPTIONS.lock().expect("determinism options lock").clone();
    let options = options.expect("check_determinism stores the options before the runs");
    let swarm = swarm_of(&options);
    let directory = scratch_directory();
    async move {
        let path = directory.path().to_owned();
        let report = simulate_bounded(options, swarm, path).await;
        DETERMINISM_HASHES.lock().expect("determinism hashes lock").push(report.history_hash);
        drop(directory);
        report
    }
}

/// The canary's run: sleeps 1 ms on even calls and 2 ms on odd ones, then
/// draws a number, so its two runs under the checker always differ.
fn drifting_run() -> impl std::future::Future<Output = u64> {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let extra_millis = CALLS.fetch_add(1, Ordering::SeqCst) % 2;
    async move {
        tokio::time::sleep(Duration::from_millis(1 + extra_millis)).await;
        madsim::rand::random::<u64>()
    }
}

/// `simulate` within `SIMULATED_TIME_MAX`. `run_seed` and the determinism
/// check both run exactly this: the bound's timer is part of the program
/// (madsim's own time limit instead once gave seed 3310401162 another
/// history than the same seed under the determinism check).
async fn simulate_bounded(options: RunOptions, swarm: Swarm, directory: std::path::PathBuf) -> RunReport {
    let simulation = tokio::time::timeout(SIMULATED_TIME_MAX, simulate(options, swarm, directory));
    simulation.await.expect("simulated time limit exceeded")
}

async fn simulate(options: RunOptions, swarm: Swarm, directory: std::path::PathBuf) -> RunReport {
    let mutations = options.mutant.map(Mutant::mutations).unwrap_or_default();
    let (chaos, mut crash_requests) = Chaos::new(&swarm, options.seed);
    let mut cluster = Cluster::start(&swarm, chaos, mutations, &directory, options.seed);
    let addresses = cluster.server_addresses();
    let client_node = Handle::current().create_node().name("clients").ip([10, 0, 1, 1].into()).build();
    let mut report = RunReport { swarm: swarm.describe(), ..RunReport::default() };
    let setup_addresses = addresses.clone();
    let ready = client_node.spawn(async move { workload::setup(&setup_addresses).await }).await.unwrap_or(false);
    if !ready {
        report.violations.push("setup: the cluster never accepted the schema".to_owned());
        return report;
    }
    let recorder = Arc::new(Recorder::new(options.mutant == Some(Mutant::Canary)));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for id in 0..swarm.clients as u64 {
        let mut client = Client::new(id, options.seed, addresses.clone(), recorder.clone(), stop.clone());
        client.lease_reads = swarm.lease_reads;
        client.stale_reads = swarm.stale_reads.then_some(swarm.clock_drift);
        client.sticky = swarm.late_across_restarts.then(|| cluster.sticky_homes.clone());
        clients.push(client_node.spawn(client.run()));
    }
    let mut rng = SmallRng::seed_from_u64(options.seed ^ FAULT_SALT);
    report.faults = fault_phase(&mut cluster, &swarm, &mut rng, &mut crash_requests).await;
    report.disk_crashes = cluster.chaos.disk_crashes();
    heal(&mut cluster).await;
    let healed = recorder.now();
    // (wait_for_leader measures from its own start: on the recorder's clock
    // the leader was seen that long after the heal.)
    let leader_seen =
        client_node.spawn(wait_for_leader(cluster.live_nodes())).await.ok().flatten().map(|after| healed + after);
    // The workload runs on for 2 s, and longer (bounded) until it has had
    // a known outcome for a write and a read invoked after the leader was
    // seen (what the progress check requires).
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Some(settled) = leader_seen {
        for _ in 0..PROGRESS_POLLS_MAX {
            if checker::progress::check_progress(&recorder.operations(), settled).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut in_flight = 0;
    for client in clients {
        if tokio::time::timeout(Duration::from_secs(10), client).await.is_err() {
            in_flight += 1;
        }
    }
    // An admin call that timed out may still have changed the membership:
    // the leader's list is the truth.
    let candidates = cluster.live_nodes();
    if let Some(members) = client_node.spawn(leader_members(candidates)).await.ok().flatten() {
        cluster.adopt_members(&members);
    }
    let final_addresses = cluster.live_members().into_iter().map(cluster::address_of).collect::<Vec<_>>();
    let sql_addresses = final_addresses.clone();
    let final_set = client_node.spawn(async move { workload::read_set(&final_addresses).await }).await.ok().flatten();
    let final_sql =
        client_node.spawn(async move { workload::read_sql_final(&sql_addresses).await }).await.ok().flatten();
    let live = cluster.live_members();
    let (converged, replicas) = client_node.spawn(converge(live.clone())).await.unwrap_or((live.clone(), Vec::new()));
    for removed in live.iter().filter(|member| !converged.contains(member)) {
        cluster.members.remove(removed);
    }
    let liveness = LivenessObservation {
        healed,
        leader_seen,
        leader_bound: LEADER_AFTER_HEAL_MAX,
        operations_in_flight: in_flight,
    };
    let mut history = recorder.operations();
    match final_set {
        Some(values) => history.push(Operation {
            client: u64::MAX,
            invoked: recorder.now(),
            completed: Some(recorder.now()),
            kind: Kind::SetFinal { values },
        }),
        None => report.violations.push("liveness: the final read of the set never succeeded".to_owned()),
    }
    match final_sql {
        Some(events) => history.extend(events.into_iter().map(|event| Operation {
            client: u64::MAX,
            invoked: recorder.now(),
            completed: Some(recorder.now()),
            kind: Kind::Sql(event),
        })),
        None => report.violations.push("liveness: the final reads of the SQL tables never succeeded".to_owned()),
    }
    check_all(&mut report, &history, &cluster, &replicas, &liveness);
    release_nodes(&cluster, &client_node).await;
    (report.sqlite_crash_points, report.sqlite_changes_undone) = crate::sqlite_files::statistics(&directory);
    report
}

/// Kills every simulated machine and lets simulated time run on, so that
/// madsim drops their tasks (it does so only when it next schedules them)
/// and with them each node's SQLite connections; otherwise every seed leaks
/// its open database files and memory into the process (a long `run` then
/// fails with "unable to open database file").
async fn release_nodes(cluster: &Cluster, client_node: &madsim::runtime::NodeHandle) {
    let handle = Handle::current();
    for node in &cluster.nodes {
        if node.paused {
            handle.resume(node.handle.id());
        }
        handle.kill(node.handle.id());
    }
    handle.kill(cluster.admin.id());
    handle.kill(client_node.id());
    tokio::time::sleep(RELEASE_TIME).await;
}

fn check_all(
    report: &mut RunReport,
    history: &[Operation],
    cluster: &Cluster,
    replicas: &[checker::ReplicaState],
    liveness: &LivenessObservation,
) {
    report.operations = history.len();
    report.sql_operations = history.iter().filter(|operation| matches!(operation.kind, Kind::Sql(_))).count();
    for operation in history {
        if let Kind::StaleRead { observed, .. } = operation.kind {
            report.stale_reads += 1;
            report.stale_reads_served += usize::from(observed.is_some());
        }
    }
    report.history_hash = hash_history(history);
    report.history = history.to_vec();
    let observed = cluster.chaos.take_observations();
    let results = [
        ("linearizability", checker::linearizability::check_linearizability(history)),
        ("bank", checker::bank::check_bank(history, ACCOUNTS as i64 * INITIAL_BALANCE)),
        ("set", checker::set::check_set(history)),
        ("sql", checker::sql::check_sql(history)),
        ("elections", checker::elections::check_election_safety(&observed.leaders)),
        ("votes", checker::elections::check_votes(&observed.votes)),
        ("committed", checker::committed::check_committed(&observed.committed)),
        (
            "log matching",
            match observed.log_violation {
                Some(violation) => Err(violation),
                None => checker::log_matching::check_log_matching(&observed.logs).and_then(|()| {
                    let live = cluster.live_members();
                    match observed.leaders.iter().max_by_key(|leader| leader.term) {
                        Some(leader) if live.contains(&leader.node) => {
                            checker::log_matching::check_prefix_of_leader(&observed.logs, leader.node, &live)
                        }
                        _ => Ok(()),
                    }
                }),
            },
        ),
        ("read indexes", observed.read_indexes.check()),
        ("convergence", checker::convergence::check_convergence(&cluster.live_members(), replicas)),
        ("liveness", checker::liveness::check_liveness(liveness)),
        (
            "progress",
            match liveness.leader_seen {
                Some(settled) => checker::progress::check_progress(history, settled),
                None => Ok(()), // Reported by the liveness check.
            },
        ),
    ];
    (report.determinate, report.unknown) = checker::progress::outcome_counts(history);
    for (name, result) in results {
        if let Err(violation) = result {
            report.violations.push(format!("{name}: {violation}"));
        }
    }
    let fatal = cluster.fatal.lock().expect("fatal lock");
    // A node given bit rot must detect it and refuse to start: that stop is right.
    let refused_rot = |node: &u64, error: &String| cluster.rotted.contains(node) && error.contains("log corrupt");
    for node in cluster.rotted.iter().filter(|node| cluster.members.contains(node)) {
        if !fatal.iter().any(|(id, error)| id == node && refused_rot(id, error)) {
            report.violations.push(format!("disk: node {node} started on a log with a rotted record"));
        }
    }
    for (node, error) in fatal.iter().filter(|(node, error)| !refused_rot(node, error)) {
        report.violations.push(format!("node stopped: node {node}: {error}"));
    }
}

/// Injects faults until the fault phase ends, and carries out the crashes
/// nodes ask for at their crash points; returns how many faults.
async fn fault_phase(
    cluster: &mut Cluster,
    swarm: &Swarm,
    rng: &mut SmallRng,
    crash_requests: &mut mpsc::UnboundedReceiver<CrashRequest>,
) -> usize {
    let start = tokio::time::Instant::now();
    let mut faults = 0;
    let mut joined = false;
    while start.elapsed() < swarm.fault_phase {
        let wait = rng.gen_range(swarm.fault_interval / 2..swarm.fault_interval * 3 / 2);
        tokio::select! {
            biased; // tokio's unbiased pick draws from an unseeded generator
            () = tokio::time::sleep(wait) => faults += inject_one(cluster, swarm, rng, &mut joined).await,
            Some(request) = crash_requests.recv() => faults += crash_at_point(cluster, &request).await,
        }
        // Stale suffixes can be overwritten later: check Log Matching
        // while the faults run, not only at the end.
        cluster.chaos.check_logs();
    }
    faults
}

/// A node crashes (or the whole cluster loses power) just after a promise.
async fn crash_at_point(cluster: &mut Cluster, request: &CrashRequest) -> usize {
    let up = |id: &u64| cluster.node(*id).running && !cluster.node(*id).paused;
    let victims: Vec<u64> = match request.whole_cluster {
        true => cluster.members.iter().filter(|id| up(id)).copied().collect(),
        false => [request.node].into_iter().filter(|id| cluster.members.contains(id) && up(id)).collect(),
    };
    if victims.is_empty() {
        return 0;
    }
    let (mut kill_after, mut down_for) = (request.kill_after, request.down_for);
    // The run a crash point ends is deaf only from the crash on, and the
    // next hears at once.
    let (mut deaf_for, mut next_deaf_for) = (kill_after, Duration::ZERO);
    let mut crashes = 0;
    loop {
        let now = tokio::time::Instant::now();
        let back_at = now + kill_after + down_for;
        let doom = Doom { deaf_from: now + kill_after - deaf_for, back_at, hears_from: back_at + next_deaf_for };
        for &id in &victims {
            cluster.chaos.doom(id, doom);
        }
        tokio::time::sleep(kill_after).await;
        for &id in &victims {
            cluster.kill(id);
        }
        tokio::time::sleep(down_for).await;
        for &id in &victims {
            cluster.restart(id);
        }
        crashes += 1;
        let crash_points = cluster.swarm.disk_crash_points || cluster.swarm.state_machine_crash_points;
        if (request.at_disk_operation || crash_points) && cluster.chaos.pick(3) > 0 {
            // Crash again in what the restart does next (recovery, catching
            // up with entries already committed): a crash point in one of
            // its first operations.
            let operations = cluster.chaos.pick(DISK_CRASH_OPERATIONS_MAX as usize) as u64;
            cluster.fail_after_operations(request.node, operations);
        }
        let again = cluster.swarm.late_across_restarts && !request.whole_cluster && cluster.chaos.pick(2) == 0;
        if !again || crashes > CRASHES_AGAIN_MAX {
            return crashes;
        }
        // A short run, then down again: what is sent to the end of this run
        // arrives in the next, so the requests of this run meet the answers
        // meant for them there.
        kill_after = Duration::from_millis(50 + cluster.chaos.pick(300) as u64);
        down_for = Duration::from_millis(1 + cluster.chaos.pick(20) as u64);
        (deaf_for, next_deaf_for) = cluster.chaos.deaf_ends(kill_after);
    }
}

async fn inject_one(cluster: &mut Cluster, swarm: &Swarm, rng: &mut SmallRng, joined: &mut bool) -> usize {
    let handle = Handle::current();
    let members: Vec<u64> = cluster.members.iter().copied().collect();
    let victim = members[rng.gen_range(0..members.len())];
    if swarm.lease_violation {
        cut_off_leader(cluster, rng, Some(faults::SLOW_CLOCK_NODE)).await;
        return 1;
    }
    let crash_points = swarm.disk_crash_points || swarm.state_machine_crash_points;
    if crash_points && rng.gen_bool(DISK_CRASH_ACTION_RATE) && cluster.node(victim).running {
        // A crash inside a call, at one of the victim's next disk
        // operations, of its log or of its SQLite files (it reports the
        // failure; `crash_at_point` takes it down there and back).
        cluster.fail_after_operations(victim, rng.gen_range(0..DISK_CRASH_OPERATIONS_MAX));
        return 1;
    }
    match rng.gen_range(0..10) {
        0..=2 if swarm.partitions => {
            if let Some(leader) = partition(cluster, &members, rng, swarm.one_way_partitions) {
                propose_to_stranded(cluster, leader, rng).await;
            }
        }
        3 if swarm.partitions => heal_links(cluster.nodes.len() as u64),
        4..=5 if swarm.kills => match cluster.node(victim).running {
            true => {
                cluster.kill(victim);
                // One node at most, and only while at least three voters
                // surely remain (a joined node may still be a learner): the
                // rest must keep a quorum without it, for good.
                let voters_at_least = cluster.members.len().saturating_sub(usize::from(*joined));
                if swarm.bit_rot && cluster.rotted.is_empty() && voters_at_least >= 3 {
                    cluster.rot_log(victim);
                }
            }
            false => cluster.restart(victim),
        },
        6 if swarm.power_loss => {
            let everyone: Vec<u64> = cluster.nodes.iter().map(|node| node.id).collect();
            for &id in &everyone {
                cluster.kill(id);
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(10..500))).await;
            for id in members {
                cluster.restart(id);
            }
        }
        7 if swarm.pauses && swarm.lease_reads => lease_fault(cluster, rng, &members, victim).await,
        7 if swarm.pauses => {
            let node = cluster.node_mut(victim);
            if node.paused {
                handle.resume(node.handle.id());
            } else {
                handle.pause(node.handle.id());
            }
            node.paused = !node.paused;
        }
        8 if swarm.membership => membership_change(cluster, rng, joined).await,
        9 if swarm.leader_transfers => transfer_leader(&cluster.admin, &members, rng).await,
        // What lease reads must survive, more often where those are off.
        8 | 9 if swarm.pauses && swarm.lease_reads => lease_fault(cluster, rng, &members, victim).await,
        _ => return 0,
    }
    1
}

/// In seeds with lease reads, what they must survive: the leader paused
/// (as SIGSTOP: the answers to its last heartbeats and its clients'
/// requests wait, another leader takes writes, then it wakes) or cut off
/// (`cut_off_leader`), the one with the slowest clock made leader first.
async fn lease_fault(cluster: &mut Cluster, rng: &mut SmallRng, members: &[u64], victim: u64) {
    if cluster.chaos.pick(2) == 0 {
        // The slowest clock within the drift the lease allows.
        let slowest = cluster.chaos.slowest_clock().filter(|node| members.contains(node));
        return cut_off_leader(cluster, rng, slowest).await;
    }
    let leader = cluster.chaos.latest_leader().filter(|leader| members.contains(leader));
    let victim = leader.filter(|_| rng.gen_bool(0.8)).unwrap_or(victim);
    let node = cluster.node_mut(victim);
    if node.running && !node.paused {
        let id = node.handle.id();
        let handle = Handle::current();
        handle.pause(id);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..3_000))).await;
        handle.resume(id);
    }
}

/// A leader cut off from its peers while its clients still reach it, for
/// 3-5 s: the others elect a leader and take writes within their election
/// timeout, while it may serve lease reads until its lease runs out (half
/// an election timeout on its own clock) and leads until it misses a
/// quorum (check_quorum). With `node`, that node is first made leader. With
/// the lease's assumption broken (`Swarm::lease_violation`: its clock slow)
/// the lease outlasts the others' election timeout in real time, lease
/// reads miss acknowledged writes, and the linearizability checker must
/// say so; within the assumption (lease seeds) they must not.
async fn cut_off_leader(cluster: &mut Cluster, rng: &mut SmallRng, node: Option<u64>) {
    let members: Vec<u64> = cluster.members.iter().copied().collect();
    if let Some(node) = node {
        for _ in 0..LEADERSHIP_POLLS_MAX {
            if cluster.chaos.latest_leader() == Some(node) {
                break;
            }
            let via = members[rng.gen_range(0..members.len())];
            transfer_leader_to(&cluster.admin, node, via).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let Some(leader) = cluster.chaos.latest_leader().filter(|leader| members.contains(leader)) else { return };
    if node.is_some_and(|node| node != leader) || !cluster.node(leader).running {
        return;
    }
    // Long enough to renew its lease; then cut off for longer than it.
    tokio::time::sleep(Duration::from_millis(rng.gen_range(100..1_000))).await;
    let net = NetSim::current();
    let id = |node: u64| cluster.node(node).handle.id();
    for &other in members.iter().filter(|&&other| other != leader) {
        net.clog_link(id(leader), id(other));
        net.clog_link(id(other), id(leader));
    }
    tokio::time::sleep(Duration::from_millis(rng.gen_range(3_000..5_000))).await;
    heal_links(cluster.nodes.len() as u64);
}

/// Leaves the leader on an island with one follower, cut off from the
/// other three, which can still send to the follower but not hear it: the
/// leader's writes and membership change become an uncommitted tail on the
/// two of them, the three elect a leader (the follower, whose log is
/// longer, cannot campaign to them), and its first appends overwrite a
/// part of the follower's tail (what a log that truncates wrongly gets
/// wrong).
fn strand_leader_tail(cluster: &Cluster, members: &[u64]) -> Option<u64> {
    let leader = cluster.chaos.latest_leader().filter(|leader| members.contains(leader))?;
    let others: Vec<u64> = members.iter().copied().filter(|&member| member != leader).collect();
    let follower = others[cluster.chaos.pick(others.len())];
    let net = NetSim::current();
    let id = |node: u64| cluster.node(node).handle.id();
    for &other in others.iter().filter(|&&other| other != follower) {
        net.clog_link(id(leader), id(other));
        net.clog_link(id(other), id(leader));
        net.clog_link(id(follower), id(other));
    }
    Some(leader)
}

/// Cuts server-to-server links only: clients still reach every node, so a
/// stale leader keeps answering them (which is what catches stale reads).
/// Returns the leader if it was stranded (`strand_leader_tail`).
fn partition(cluster: &Cluster, members: &[u64], rng: &mut SmallRng, one_way: bool) -> Option<u64> {
    heal_links(cluster.nodes.len() as u64);
    let net = NetSim::current();
    // Each member's side; a bridge (`None`) keeps links to both.
    let mut side: Vec<Option<bool>> = members.iter().map(|_| Some(rng.gen_bool(0.5))).collect();
    if rng.gen_bool(0.3) {
        // Isolate one node.
        side = members.iter().enumerate().map(|(position, _)| Some(position == 0)).collect();
    }
    // Shapes added later draw from the chaos generator, so that the fault
    // generator's sequence (and each seed's older faults) stays the same.
    if members.len() >= 5 && cluster.chaos.pick(3) == 0 {
        return strand_leader_tail(cluster, members);
    }
    match cluster.chaos.pick(3) {
        0 => {
            if let Some(leader) = cluster.chaos.latest_leader().filter(|leader| members.contains(leader)) {
                side = members.iter().map(|&member| Some(member == leader)).collect();
            }
        }
        1 if members.len() >= 3 => {
            // Two halves that only the bridge joins: both are majorities
            // with it.
            let bridge = cluster.chaos.pick(members.len());
            let mut others = 0..;
            side = (0..members.len())
                .map(|position| (position != bridge).then(|| others.next().unwrap_or(0) % 2 == 0))
                .collect();
        }
        _ => {}
    }
    for (a_position, &a) in members.iter().enumerate() {
        for (b_position, &b) in members.iter().enumerate() {
            if side[a_position] == Some(true) && side[b_position] == Some(false) {
                let (a_id, b_id) = (cluster.node(a).handle.id(), cluster.node(b).handle.id());
                net.clog_link(a_id, b_id);
                if !one_way {
                    net.clog_link(b_id, a_id);
                }
            }
        }
    }
    None
}

pub(super) fn heal_links(nodes: u64) {
    let net = NetSim::current();
    let handle = Handle::current();
    let ids: Vec<_> = (1..=nodes).filter_map(|id| handle.get_node(format!("node-{id}")).map(|n| n.id())).collect();
    for &a in &ids {
        for &b in &ids {
            if a != b {
                net.unclog_link(a, b);
            }
        }
    }
}

async fn heal(cluster: &mut Cluster) {
    heal_links(cluster.nodes.len() as u64);
    // Disk crash points not reached yet are lifted; a node that reached
    // one (its crash not yet carried out) goes down now and comes back.
    for id in 1..=cluster.nodes.len() as u64 {
        if !cluster.lift_operation_budgets(id) && cluster.node(id).running {
            cluster.kill(id);
        }
    }
    // madsim drops a killed node's tasks only when it next schedules them: a
    // node killed by the fault phase's last action must be gone before it
    // restarts, or its old SQLite connection still holds the database.
    tokio::time::sleep(KILL_SETTLE).await;
    let handle = Handle::current();
    for id in 1..=cluster.nodes.len() as u64 {
        let node = cluster.node_mut(id);
        if node.paused {
            handle.resume(node.handle.id());
            node.paused = false;
        }
        if !cluster.node(id).running && cluster.members.contains(&id) {
            cluster.restart(id);
        }
    }
}

async fn membership_change(cluster: &mut Cluster, rng: &mut SmallRng, joined: &mut bool) {
    let via = *cluster.members.iter().next().expect("a member");
    if !*joined {
        cluster.join_node(via);
        *joined = true;
        return;
    }
    if cluster.members.len() > 3 {
        let members: Vec<u64> = cluster.members.iter().copied().collect();
        let drawn = members[rng.gen_range(0..members.len())];
        let via = *members.iter().find(|&&m| m != removed_first(cluster, drawn)).expect("another member");
        remove_member(cluster, drawn, via).await;
    }
}

/// The node to remove when `drawn` is: a node whose log rotted never comes
/// back, and removing another voter could leave it half of the voters, and
/// no quorum ever again. As an operator would, remove the dead node first.
fn removed_first(cluster: &Cluster, drawn: u64) -> u64 {
    cluster.rotted.iter().find(|node| cluster.members.contains(node)).copied().unwrap_or(drawn)
}

/// Asks member `via` to remove `drawn` (or the rotted node, see
/// [`removed_first`]); bounded. The harness's member list follows only a
/// removal known to be done (the leader's list is adopted after the heal).
async fn remove_member(cluster: &mut Cluster, drawn: u64, via: u64) {
    let removed = removed_first(cluster, drawn);
    let request = deeb_proto::RemoveNodeRequest { node_id: removed };
    let target = cluster::address_of(via);
    let done = cluster
        .admin
        .clone()
        .spawn(async move {
            let Some(mut client) = workload::connect_within(&target, Duration::from_secs(1)).await else {
                return false;
            };
            matches!(tokio::time::timeout(Duration::from_secs(3), client.remove_node(request)).await, Ok(Ok(_)))
        })
        .await
        .unwrap_or(false);
    if done {
        cluster.note_removed(removed);
    }
}

/// A stranded leader (`strand_leader_tail`) is sent a write and a
/// membership change at once: a tail of two uncommitted entries on the one
/// follower it reaches, beside whatever its clients wrote (it executes one
/// batch of SQL at a time, so writes add one entry at most). The leader the
/// others elect then overwrites a part of that tail on the follower.
async fn propose_to_stranded(cluster: &mut Cluster, leader: u64, rng: &mut SmallRng) {
    let others: Vec<u64> = cluster.members.iter().copied().filter(|&member| member != leader).collect();
    if others.len() < 4 {
        return;
    }
    let address = cluster::address_of(leader);
    // Not awaited: it waits for a commit that may never come.
    drop(cluster.admin.spawn(async move {
        let Some(mut client) = workload::connect_within(&address, Duration::from_secs(1)).await else { return };
        let request =
            deeb_proto::ExecuteRequest { statements: vec![workload::plain(STRANDED_WRITE)], ..Default::default() };
        let _ = tokio::time::timeout(Duration::from_secs(3), client.execute(request)).await;
    }));
    let drawn = others[rng.gen_range(0..others.len())];
    remove_member(cluster, drawn, leader).await;
}

async fn transfer_leader(admin: &madsim::runtime::NodeHandle, members: &[u64], rng: &mut SmallRng) {
    let target = members[rng.gen_range(0..members.len())];
    let via = members[rng.gen_range(0..members.len())];
    transfer_leader_to(admin, target, via).await;
}

/// Asks member `via` to hand leadership to `target` (bounded).
async fn transfer_leader_to(admin: &madsim::runtime::NodeHandle, target: u64, via: u64) {
    let via = cluster::address_of(via);
    let request = deeb_proto::TransferLeaderRequest { node_id: target };
    let _ = admin
        .spawn(async move {
            if let Some(mut client) = workload::connect_within(&via, Duration::from_secs(1)).await {
                let _ = tokio::time::timeout(Duration::from_secs(3), client.transfer_leader(request)).await;
            }
        })
        .await;
}

async fn wait_for_leader(members: Vec<u64>) -> Option<Duration> {
    let start = tokio::time::Instant::now();
    while start.elapsed() < LEADER_AFTER_HEAL_MAX * 2 {
        for &id in &members {
            if cluster::status(id, false).await.is_some_and(|status| status.role == "leader") {
                return Some(start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The member list of whichever candidate leads (bounded retries).
async fn leader_members(candidates: Vec<u64>) -> Option<Vec<u64>> {
    for _ in 0..LEADER_MEMBERS_POLLS_MAX {
        if let Some(members) = leader_members_now(&candidates).await {
            return Some(members);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The member list of whichever candidate leads now, if one answers.
async fn leader_members_now(candidates: &[u64]) -> Option<Vec<u64>> {
    for &id in candidates {
        if let Some(status) = cluster::status(id, false).await.filter(|status| status.role == "leader") {
            return Some(status.members.iter().map(|member| member.node_id).collect());
        }
    }
    None
}

/// Waits (bounded) for every live member to reach the same applied index,
/// then returns the members and their states (the last seen, if they
/// never agree). A removal proposed during the faults can commit after the
/// members were adopted (one sent to a leader cut off from the others that
/// kept leading after the heal): the leader's list is read at every poll,
/// and a member it no longer lists is not waited for.
async fn converge(mut members: Vec<u64>) -> (Vec<u64>, Vec<checker::ReplicaState>) {
    let mut last = Vec::new();
    for _ in 0..CONVERGENCE_POLLS_MAX {
        if let Some(listed) = leader_members_now(&members).await {
            members.retain(|member| listed.contains(member));
        }
        let states = cluster::replica_states(&members).await;
        let reachable: Vec<_> = states.iter().flatten().cloned().collect();
        let same_index = reachable.windows(2).all(|pair| pair[0].applied_index == pair[1].applied_index);
        if reachable.len() == members.len() && same_index {
            return (members, reachable);
        }
        last = reachable;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (members, last)
}

fn hash_history(history: &[Operation]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{history:?}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A run's directory for its nodes' files; SQLite's files there go
/// through the crash-modelling VFS (`crate::sqlite_files`), which forgets
/// them when the run ends.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        crate::sqlite_files::forget(self.0.path());
    }
}

fn scratch_directory() -> Scratch {
    crate::sqlite_files::install(true);
    // SQLite fsyncs for real: on tmpfs that costs nothing.
    let shm = std::path::Path::new("/dev/shm");
    let made = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() };
    Scratch(made.expect("a scratch directory for the simulated nodes"))
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
        .unwrap_or_else(|| "non-string panic".to_owned())
}

const SIMULATED_TIME_MAX: Duration = Duration::from_secs(600);
const LEADER_AFTER_HEAL_MAX: Duration = Duration::from_secs(10);
const CONVERGENCE_POLLS_MAX: usize = 150;
const LEADER_MEMBERS_POLLS_MAX: usize = 20;
/// What `propose_to_stranded` writes (the noise table takes anything).
const STRANDED_WRITE: &str = "INSERT INTO noise (r) VALUES (random())";
/// Tries at handing leadership to the slow-clock node (`outlast_the_lease`).
const LEADERSHIP_POLLS_MAX: usize = 10;
const KILL_SETTLE: Duration = Duration::from_millis(1);
/// A node crashed at a crash point crashes again soon at most this often.
const CRASHES_AGAIN_MAX: usize = 3;
/// A disk crash point falls within this many of the node's next log disk
/// operations (a few entries' appends, syncs and hard-state writes).
const DISK_CRASH_OPERATIONS_MAX: u64 = 60;
/// Share of fault actions that arm a disk crash point, where drawn.
const DISK_CRASH_ACTION_RATE: f64 = 0.4;
/// Half-second polls, after the first 2 s, for the workload to make
/// progress after the heal: 10 s more at most.
const PROGRESS_POLLS_MAX: usize = 20;
/// Simulated time for killed machines' tasks to be scheduled and dropped.
const RELEASE_TIME: Duration = Duration::from_secs(30);
const FAULT_SALT: u64 = 0xFA17_5EED;

/// Held for the whole of a `check_determinism`, which uses the two statics below.
static DETERMINISM_SERIAL: Mutex<()> = Mutex::new(());
/// What `determinism_run` runs: set by `check_determinism`.
static DETERMINISM_OPTIONS: Mutex<Option<RunOptions>> = Mutex::new(None);
/// The history hash of each run `check_determinism` made, in order.
static DETERMINISM_HASHES: Mutex<Vec<u64>> = Mutex::new(Vec::new());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn determinism_check_reports_runs_that_differ() {
        assert_eq!(determinism_canary(), Ok(()));
    }

    #[test]
    fn determinism_check_accepts_equal_runs() {
        let steady_run = || async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            madsim::rand::random::<u64>()
        };
        assert!(run_twice(0, madsim::Config::default(), steady_run).is_ok());
    }

    /// Seed 3310401162 told the two apart when only the determinism check's
    /// run had the time bound's timer.
    #[test]
    fn run_seed_and_the_determinism_check_run_the_same_program() {
        let options = RunOptions { seed: 3_310_401_162, scenario: Scenario::Crashes, nodes: 3, mutant: None };
        let checked = check_determinism(&options).expect("the seed runs the same twice");
        assert_eq!(run_seed(&options).history_hash, checked.history_hash);
    }

    #[test]
    fn a_simulated_seed_runs_the_same_twice() {
        let options = RunOptions { seed: 1, scenario: Scenario::Partitions, nodes: 3, mutant: None };
        let report = check_determinism(&options).expect("seed 1 runs the same twice");
        assert!(report.operations > 0, "the seed did some work");
        assert!(!report.failed(), "{:?}", report.violations);
    }
}
