//! Each seed draws its own fault mix and intensities ("swarm testing", as in
//! TigerBeetle's VOPR): one seed, one reproducible scenario.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A named family of scenarios (`--scenario`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Everything below, mixed per seed.
    Mixed,
    /// Partitions only (leader isolation, minority/majority, bridge, one-way).
    Partitions,
    /// Kills, restarts and whole-cluster power loss.
    Crashes,
    /// Membership changes and leader transfers under faults.
    Membership,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [Scenario::Mixed, Scenario::Partitions, Scenario::Crashes, Scenario::Membership];

    /// The scenario a seed runs when none is chosen: all of them in turn.
    pub fn for_seed(seed: u64) -> Self {
        Self::ALL[(seed % Self::ALL.len() as u64) as usize]
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scenario| scenario.name() == text)
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Mixed => "mixed",
            Scenario::Partitions => "partitions",
            Scenario::Crashes => "crashes",
            Scenario::Membership => "membership",
        }
    }
}

/// The faults one seed runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct Swarm {
    pub nodes: u64,
    pub clients: usize,
    /// How long faults are injected; a heal phase follows.
    pub fault_phase: Duration,
    /// Mean time between fault actions.
    pub fault_interval: Duration,
    pub packet_loss_rate: f64,
    pub partitions: bool,
    pub one_way_partitions: bool,
    pub kills: bool,
    pub power_loss: bool,
    pub pauses: bool,
    pub membership: bool,
    pub leader_transfers: bool,
    /// Small election timeouts and snapshot intervals.
    pub tiny_timeouts: bool,
    pub snapshot_interval_entries: u64,
    /// Kill nodes (or the whole cluster) right after they promise a peer
    /// something durable: a vote or an append acknowledgement.
    pub crash_points: bool,
    /// Share of peer batches delivered twice, the copy late.
    pub duplicate_rate: f64,
    /// Share of peer batches held back, so that later ones overtake them.
    pub hold_back_rate: f64,
    /// Each node's clock runs at 1 ± up to this rate.
    pub clock_drift: f64,
    /// Node clocks jump forwards and backwards during the fault phase.
    pub clock_jumps: bool,
    /// One killed node's log rots (a flipped byte in a synced record).
    pub bit_rot: bool,
    /// Half the register reads are lease reads. Only with clocks within
    /// the lease's assumption (no jumps; drift up to 20%, well inside the
    /// margin of half an election timeout).
    pub lease_reads: bool,
    /// A share of register reads are bounded-stale reads, checked against
    /// exactly the staleness their bound allows. Only with clocks that do
    /// not jump (the node measures the bound on its own clock), and not in
    /// seeds with lease reads.
    pub stale_reads: bool,
    /// Jobs off a node's event loop (a leader's SQL batch, a snapshot, a
    /// digest) take up to this long each (zero: no time, as SQL takes in
    /// simulated time).
    pub work_time_max: Duration,
    /// Some kills are crashes at the k-th operation of a node's log disk
    /// (inside a persist, an append or a compaction), not between calls.
    pub disk_crash_points: bool,
    /// Messages sent to a node about to crash at a crash point arrive after
    /// it restarts (its new run must not take them for its own), and the
    /// node may crash again soon after, so its short run's requests meet
    /// the next run's.
    pub late_across_restarts: bool,
    /// Crash points in the state machine's files (SQLite operations) and
    /// right after a snapshot install or a log compaction, in seeds without
    /// `disk_crash_points`. Drawn from a generator of its own, so the seeds
    /// without it run as before.
    pub state_machine_crash_points: bool,
    /// The lease's assumption broken on purpose (the scenario mutant
    /// `lease-beyond-clock-bound`; never drawn): node 1's clock runs at a
    /// fifth of real speed, and the fault phase makes it lead and then
    /// cuts it off from its peers, again and again.
    pub lease_violation: bool,
}

impl Swarm {
    /// Draws a fault mix from `seed` for `scenario`.
    pub fn draw(seed: u64, scenario: Scenario, nodes: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed ^ SWARM_SALT);
        let coin = |rng: &mut SmallRng, p: f64| rng.gen_bool(p);
        let (partitions, kills, membership) = match scenario {
            Scenario::Mixed => (coin(&mut rng, 0.7), coin(&mut rng, 0.6), coin(&mut rng, 0.3)),
            Scenario::Partitions => (true, false, false),
            Scenario::Crashes => (false, true, false),
            Scenario::Membership => (coin(&mut rng, 0.5), coin(&mut rng, 0.3), true),
        };
        let power_loss = kills && coin(&mut rng, 0.4);
        let one_way_partitions = partitions && coin(&mut rng, 0.4);
        let pauses = scenario == Scenario::Mixed && coin(&mut rng, 0.3);
        let leader_transfers = coin(&mut rng, 0.3) || scenario == Scenario::Membership;
        let tiny_timeouts = coin(&mut rng, 0.3);
        let packet_loss_rate = if coin(&mut rng, 0.3) { rng.gen_range(0.0..0.05) } else { 0.0 };
        let snapshot_interval_entries = if coin(&mut rng, 0.5) { rng.gen_range(5..50) } else { 10_000 };
        // Faults added later draw from their own generator, so that a seed
        // keeps the faults above that it drew before they existed.
        let mut later = SmallRng::seed_from_u64(seed ^ LATER_FAULTS_SALT);
        let crash_points = scenario != Scenario::Partitions && coin(&mut later, 0.8);
        let duplicate_rate = if coin(&mut later, 0.6) { later.gen_range(0.2..0.6) } else { 0.0 };
        let hold_back_rate = if coin(&mut later, 0.4) { later.gen_range(0.0..0.3) } else { 0.0 };
        let clock_drift = if coin(&mut later, 0.4) { later.gen_range(0.0..0.2) } else { 0.0 };
        let clock_jumps = coin(&mut later, 0.2);
        let bit_rot = kills && coin(&mut later, 0.3);
        let mut reads = SmallRng::seed_from_u64(seed ^ READS_SALT);
        let lease_reads = !clock_jumps && coin(&mut reads, 0.5);
        // Leaders paused past their lease are what lease reads must survive.
        let pauses = pauses || (lease_reads && coin(&mut reads, 0.6));
        // Not with lease reads: each kind gets the seed's reads to itself.
        let stale_reads =
            !clock_jumps && !lease_reads && coin(&mut SmallRng::seed_from_u64(seed ^ STALE_READS_SALT), 0.7);
        let mut work = SmallRng::seed_from_u64(seed ^ WORK_SALT);
        // Up to past an election timeout: the loop must heartbeat meanwhile.
        let work_time_max =
            if coin(&mut work, 0.5) { Duration::from_millis(work.gen_range(5..1_500)) } else { Duration::ZERO };
        let disk_crash_points = kills && coin(&mut work, 0.6);
        let late_across_restarts = (crash_points || disk_crash_points) && coin(&mut work, 0.6);
        let mut state_machine = SmallRng::seed_from_u64(seed ^ STATE_MACHINE_SALT);
        // Not with the log's: those seeds run as they did before these
        // existed (the narrowest log mutants are caught on them).
        let state_machine_crash_points = kills && !disk_crash_points && coin(&mut state_machine, 0.9);
        Self {
            nodes,
            clients: rng.gen_range(2..6),
            fault_phase: Duration::from_millis(rng.gen_range(4_000..12_000)),
            fault_interval: Duration::from_millis(rng.gen_range(200..1_500)),
            packet_loss_rate,
            partitions,
            one_way_partitions,
            kills,
            power_loss,
            pauses,
            membership,
            leader_transfers,
            tiny_timeouts,
            snapshot_interval_entries,
            crash_points,
            duplicate_rate,
            hold_back_rate,
            clock_drift,
            clock_jumps,
            bit_rot,
            lease_reads,
            stale_reads,
            work_time_max,
            disk_crash_points,
            late_across_restarts,
            state_machine_crash_points,
            lease_violation: false,
        }
    }

    /// This swarm with bounded-stale reads on and slow work (applies up to
    /// 75 ms each): followers that hear their leader but apply behind it,
    /// where a staleness bound taken from leader contact shows.
    pub fn lagging_stale_readers(self) -> Self {
        Self { stale_reads: true, lease_reads: false, ..self.with_slow_work() }
    }

    /// This swarm with lease reads on and slow work (applies up to 75 ms
    /// each): the leader answers its writes at commit, so a lease read
    /// that does not wait for the apply shows.
    pub fn lease_readers_of_slow_applies(self) -> Self {
        Self { stale_reads: false, lease_reads: true, ..self.with_slow_work() }
    }

    /// This swarm with work up to 1.5 s (applies up to 75 ms) and no clock
    /// jumps.
    fn with_slow_work(self) -> Self {
        Self { clock_jumps: false, work_time_max: self.work_time_max.max(Duration::from_millis(1_500)), ..self }
    }

    /// This swarm with elections often contested: tiny timeouts, partitions
    /// and kills, and crashes right after votes, where a vote not made
    /// durable lets a voter back within the election vote again.
    pub fn contested_elections(self) -> Self {
        Self { partitions: true, kills: true, crash_points: true, tiny_timeouts: true, ..self }
    }

    /// This swarm with the lease's clock assumption broken and no other
    /// fault: lease reads only where a violation must show.
    pub fn breaking_the_lease(self) -> Self {
        Self {
            partitions: false,
            one_way_partitions: false,
            kills: false,
            power_loss: false,
            pauses: false,
            membership: false,
            leader_transfers: false,
            tiny_timeouts: false,
            packet_loss_rate: 0.0,
            crash_points: false,
            duplicate_rate: 0.0,
            hold_back_rate: 0.0,
            clock_drift: 0.0,
            clock_jumps: false,
            bit_rot: false,
            lease_reads: true,
            stale_reads: false,
            disk_crash_points: false,
            late_across_restarts: false,
            state_machine_crash_points: false,
            lease_violation: true,
            // Clients whose writes to the cut-off leader hang leave the
            // others to read from it.
            clients: 8,
            ..self
        }
    }

    /// Whether peer batches are duplicated or held back.
    pub fn messes_with_messages(&self) -> bool {
        self.duplicate_rate > 0.0 || self.hold_back_rate > 0.0 || self.late_across_restarts
    }

    /// The faults this seed drew, for the failure report.
    pub fn describe(&self) -> String {
        let mut faults = Vec::new();
        let flags = [
            (self.partitions, "partitions"),
            (self.one_way_partitions, "one-way"),
            (self.kills, "kills"),
            (self.power_loss, "power-loss"),
            (self.pauses, "pauses"),
            (self.membership, "membership"),
            (self.leader_transfers, "transfers"),
            (self.tiny_timeouts, "tiny-timeouts"),
            (self.crash_points, "crash-points"),
            (self.clock_jumps, "clock-jumps"),
            (self.bit_rot, "bit-rot"),
            (self.lease_reads, "lease-reads"),
            (self.stale_reads, "stale-reads"),
            (self.disk_crash_points, "disk-crash-points"),
            (self.late_across_restarts, "late-across-restarts"),
            (self.state_machine_crash_points, "state-machine-crash-points"),
            (self.lease_violation, "lease-violation"),
        ];
        for (on, name) in flags {
            if on {
                faults.push(name.to_owned());
            }
        }
        if self.packet_loss_rate > 0.0 {
            faults.push(format!("loss={:.3}", self.packet_loss_rate));
        }
        if self.duplicate_rate > 0.0 {
            faults.push(format!("duplicate={:.2}", self.duplicate_rate));
        }
        if self.hold_back_rate > 0.0 {
            faults.push(format!("reorder={:.2}", self.hold_back_rate));
        }
        if self.clock_drift > 0.0 {
            faults.push(format!("drift={:.2}", self.clock_drift));
        }
        if !self.work_time_max.is_zero() {
            faults.push(format!("slow-work<={}ms", self.work_time_max.as_millis()));
        }
        if self.snapshot_interval_entries < 10_000 {
            faults.push(format!("snapshot-every={}", self.snapshot_interval_entries));
        }
        format!(
            "nodes={} clients={} faults={}ms [{}]",
            self.nodes,
            self.clients,
            self.fault_phase.as_millis(),
            faults.join(" ")
        )
    }
}

/// Keeps the swarm draw independent of madsim's own use of the seed.
const SWARM_SALT: u64 = 0x005E_ED0F_DEEB;
const LATER_FAULTS_SALT: u64 = 0x1A7E_FA17;
const READS_SALT: u64 = 0x0EAD_5EED;
const WORK_SALT: u64 = 0x5107_3012;
const STATE_MACHINE_SALT: u64 = 0x5A7E_3AC2;
const STALE_READS_SALT: u64 = 0x57A1_E8EA;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_swarm_and_seeds_differ() {
        assert_eq!(Swarm::draw(3, Scenario::Mixed, 3), Swarm::draw(3, Scenario::Mixed, 3));
        let distinct: std::collections::BTreeSet<String> =
            (0..50).map(|seed| Swarm::draw(seed, Scenario::Mixed, 3).describe()).collect();
        assert!(distinct.len() > 10, "seeds should draw different mixes: {distinct:?}");
    }

    #[test]
    fn scenarios_force_their_faults() {
        for seed in 0..20 {
            assert!(Swarm::draw(seed, Scenario::Partitions, 3).partitions);
            assert!(Swarm::draw(seed, Scenario::Crashes, 3).kills);
            assert!(Swarm::draw(seed, Scenario::Membership, 5).membership);
        }
        assert_eq!(Scenario::parse("crashes"), Some(Scenario::Crashes));
        assert_eq!(Scenario::parse("nope"), None);
    }
}
