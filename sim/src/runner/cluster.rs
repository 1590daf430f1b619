//! The simulated cluster: real `deeb_server::run_node` on madsim nodes, each
//! over a `MemDisk` that survives kills and loses unsynced writes on restart.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deeb_core::disk::MemDisk;
use deeb_core::{Mutations, NodeId};
use deeb_proto::{StatusRequest, StatusResponse};
use deeb_server::ServeConfig;
use madsim::runtime::{Handle, NodeHandle};

use super::faults::Chaos;
use super::swarm::Swarm;
use super::workload::StickyHomes;
use crate::checker::convergence::ReplicaState;

/// Bit rot hits one of a segment's last this many records.
const ROT_WINDOW_RECORDS: usize = 8;
/// A log record's frame header: length and checksum.
const FRAME_HEADER_BYTES: usize = 8;

/// The port every simulated node serves on.
const PORT: u16 = 7000;

pub fn address_of(id: u64) -> String {
    format!("{}:{PORT}", ip_of(id))
}

fn ip_of(id: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, u8::try_from(id).expect("fewer than 256 nodes")))
}

/// One server node of the simulation.
pub struct SimNode {
    pub id: u64,
    pub handle: NodeHandle,
    /// The node's log disk (shared with the node).
    pub disk: MemDisk,
    pub running: bool,
    pub paused: bool,
}

/// The nodes, and what the god's-eye observer saw.
pub struct Cluster {
    pub nodes: Vec<SimNode>,
    /// Current voters and learners (removed nodes leave this set).
    pub members: BTreeSet<u64>,
    /// Why nodes stopped: (node, error).
    pub fatal: Arc<Mutex<Vec<(u64, String)>>>,
    /// Nodes whose log was given bit rot: they must refuse to start.
    pub rotted: BTreeSet<u64>,
    /// The faults behind the hooks, and what the nodes reported.
    pub chaos: Arc<Chaos>,
    /// The simulated machine admin calls come from.
    pub admin: NodeHandle,
    data_dir: PathBuf,
    initial: Vec<(NodeId, String)>,
    pub swarm: Swarm,
    mutations: Mutations,
    crash_salt: Arc<AtomicU64>,
    /// Where sticky clients go (see `Client::sticky`).
    pub sticky_homes: Arc<StickyHomes>,
}

impl Cluster {
    pub fn start(swarm: &Swarm, chaos: Arc<Chaos>, mutations: Mutations, data_dir: &Path, seed: u64) -> Self {
        let initial: Vec<(NodeId, String)> = (1..=swarm.nodes).map(|id| (NodeId(id), address_of(id))).collect();
        let mut cluster = Self {
            nodes: Vec::new(),
            members: (1..=swarm.nodes).collect(),
            fatal: Arc::new(Mutex::new(Vec::new())),
            rotted: BTreeSet::new(),
            chaos,
            admin: Handle::current().create_node().name("admin").ip([10, 0, 2, 1].into()).build(),
            data_dir: data_dir.to_owned(),
            initial: initial.clone(),
            sticky_homes: Arc::new(StickyHomes {
                restarted_last: AtomicUsize::new(NO_RESTART_YET),
                removed: AtomicU64::new(0),
            }),
            swarm: swarm.clone(),
            mutations,
            crash_salt: Arc::new(AtomicU64::new(seed)),
        };
        for id in 1..=swarm.nodes {
            cluster.spawn_node(id, initial.clone(), None);
        }
        cluster
    }

    /// Starts a node that joins through an existing member.
    pub fn join_node(&mut self, via: u64) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        self.spawn_node(id, Vec::new(), Some(address_of(via)));
        self.members.insert(id);
        id
    }

    fn spawn_node(&mut self, id: u64, peers: Vec<(NodeId, String)>, join: Option<String>) {
        let config = self.serve_config(id, peers, join);
        let directory = config.data_dir.clone();
        crate::sqlite_files::track(&directory);
        let disk = MemDisk::new();
        let (fatal, salt, chaos) = (self.fatal.clone(), self.crash_salt.clone(), self.chaos.clone());
        let kept = disk.clone();
        let handle = Handle::current()
            .create_node()
            .name(format!("node-{id}"))
            .ip(ip_of(id))
            .init(move || {
                let (config, disk, fatal, chaos) = (config.clone(), disk.clone(), fatal.clone(), chaos.clone());
                // A (re)start after a kill: unsynced log writes are lost, and
                // so may be unsynced writes of the SQLite files.
                let salt = salt.fetch_add(1, Ordering::SeqCst);
                disk.crash(salt);
                crate::sqlite_files::crash(&config.data_dir, salt);
                async move {
                    let result =
                        deeb_server::run_node(config.clone(), disk.clone(), std::future::pending::<()>()).await;
                    let at_crash_point =
                        disk.operation_budget_spent() || crate::sqlite_files::budget_spent(&config.data_dir);
                    match result {
                        Ok(()) => {}
                        // A disk's crash point: the process dies there.
                        Err(_) if at_crash_point => chaos.crash_at_disk_operation(id),
                        Err(error) => fatal.lock().expect("fatal lock").push((id, error.to_string())),
                    }
                }
            })
            .build();
        self.nodes.push(SimNode { id, handle, disk: kept, running: true, paused: false });
    }

    fn serve_config(&self, id: u64, peers: Vec<(NodeId, String)>, join: Option<String>) -> ServeConfig {
        let listen = SocketAddr::new(ip_of(id), PORT);
        let mut config = ServeConfig::new(NodeId(id), self.node_directory(id), listen);
        config.peers = peers;
        config.join = join.into_iter().collect();
        config.core.seed = self.crash_salt.load(Ordering::SeqCst).wrapping_mul(7919).wrapping_add(id);
        config.core.snapshot_interval_entries = self.swarm.snapshot_interval_entries;
        // Compact about every other snapshot, so followers catch up both
        // from the log and by snapshot.
        config.core.compaction_lag_entries = self.swarm.snapshot_interval_entries / 2;
        config.core.mutations = self.mutations.clone();
        if self.swarm.tiny_timeouts {
            config.core.tick_ms = 20;
            config.core.election_ticks = 5;
            config.core.heartbeat_ticks = 1;
        }
        config.request_timeout = Duration::from_secs(2);
        config.hooks = self.chaos.hooks(id);
        config
    }

    pub fn server_addresses(&self) -> Vec<String> {
        self.initial.iter().map(|(_, address)| address.clone()).collect()
    }

    pub fn node(&self, id: u64) -> &SimNode {
        &self.nodes[(id - 1) as usize]
    }

    pub fn node_mut(&mut self, id: u64) -> &mut SimNode {
        &mut self.nodes[(id - 1) as usize]
    }

    /// Live members, for convergence checks (a node with a rotted log
    /// stays down).
    /// Every running node with a sound log, member or not: where to look
    /// for the leader after the heal. A node whose removal the simulator
    /// saw succeed can be back in the configuration (a joiner removed
    /// before it heard it was added, whose retried join added it again:
    /// seed 50016715), and may lead.
    pub fn live_nodes(&self) -> Vec<u64> {
        self.nodes.iter().filter(|node| node.running && !self.rotted.contains(&node.id)).map(|node| node.id).collect()
    }

    pub fn live_members(&self) -> Vec<u64> {
        self.members.iter().copied().filter(|&id| self.node(id).running && !self.rotted.contains(&id)).collect()
    }

    /// Bit rot in a (killed) node's newest log segment: one byte of one of
    /// its last records, never the very last (damage there is rightly taken
    /// for a torn write and cut). The node must then refuse to start.
    pub fn rot_log(&mut self, id: u64) {
        let disk = &self.nodes[(id - 1) as usize].disk;
        let mut segments = disk.durable_files().into_iter().filter(|(name, _)| name.ends_with(".seg"));
        let Some((name, bytes)) = segments.next_back() else { return };
        let records = deeb_core::log::decode_segment(&bytes).records;
        if records.len() < 2 {
            return;
        }
        let candidates = records.len() - 1;
        let first = candidates.saturating_sub(ROT_WINDOW_RECORDS);
        let chosen = first + self.chaos.pick(candidates - first);
        let (start, end) = (records[chosen].offset as usize + FRAME_HEADER_BYTES, records[chosen + 1].offset as usize);
        if disk.rot_byte(&name, start + self.chaos.pick(end - start)) {
            self.rotted.insert(id);
        }
    }

    /// Takes `members` (the leader's list) as the membership, restarting any
    /// member that is down.
    pub fn adopt_members(&mut self, members: &[u64]) {
        let known = |id: &&u64| (1..=self.nodes.len() as u64).contains(id);
        self.members = members.iter().filter(known).copied().collect();
        // A removal whose call timed out may have applied.
        for id in 1..=self.nodes.len() as u64 {
            if !self.members.contains(&id) {
                self.note_removed(id);
            }
        }
        for id in self.members.clone() {
            if !self.node(id).running {
                self.restart(id);
            }
        }
    }

    pub fn kill(&mut self, id: u64) {
        crate::sqlite_files::kill(&self.node_directory(id));
        let node = self.node_mut(id);
        Handle::current().kill(node.handle.id());
        node.running = false;
    }

    /// Node `id`'s data directory (its SQLite files and snapshots).
    pub fn node_directory(&self, id: u64) -> PathBuf {
        self.data_dir.join(format!("node-{id}"))
    }

    /// A crash point at node `id`'s `operations`-th next disk operation: of
    /// its raft log (`disk_crash_points`) or of its SQLite files
    /// (`state_machine_crash_points`).
    pub fn fail_after_operations(&self, id: u64, operations: u64) {
        if self.swarm.disk_crash_points {
            self.node(id).disk.fail_after_operations(operations);
        }
        if self.swarm.state_machine_crash_points {
            crate::sqlite_files::fail_after_operations(&self.node_directory(id), operations);
        }
    }

    /// Lifts node `id`'s crash points not reached yet; false if it reached
    /// one (its crash not yet carried out).
    pub fn lift_operation_budgets(&self, id: u64) -> bool {
        let log = self.node(id).disk.lift_operation_budget();
        let sqlite = crate::sqlite_files::lift_operation_budget(&self.node_directory(id));
        log && sqlite
    }

    /// Node `id` is no longer a member: sticky clients stop going there.
    pub fn note_removed(&mut self, id: u64) {
        self.members.remove(&id);
        let Some(place) = self.initial.iter().position(|(initial, _)| initial.0 == id) else { return };
        let homes = &self.sticky_homes;
        let _ = homes.restarted_last.compare_exchange(place, NO_RESTART_YET, Ordering::SeqCst, Ordering::SeqCst);
        if place < 64 {
            homes.removed.fetch_or(1 << place, Ordering::SeqCst);
        }
    }

    pub fn restart(&mut self, id: u64) {
        let node = self.node_mut(id);
        Handle::current().restart(node.handle.id());
        node.running = true;
        let place = self.initial.iter().position(|(initial, _)| initial.0 == id);
        if let Some(place) = place.filter(|_| self.members.contains(&id)) {
            self.sticky_homes.restarted_last.store(place, Ordering::SeqCst);
        }
    }
}

/// Asks one node for its status (and digest), bounded.
pub async fn status(id: u64, with_digest: bool) -> Option<StatusResponse> {
    let mut client = super::workload::connect_within(&address_of(id), Duration::from_secs(1)).await?;
    let call = client.status(StatusRequest { with_digest });
    let response = tokio::time::timeout(Duration::from_secs(2), call).await.ok()?.ok()?;
    Some(response.into_inner())
}

/// The replica state of every given node, or `None` for unreachable ones.
pub async fn replica_states(ids: &[u64]) -> Vec<Option<ReplicaState>> {
    let mut states = Vec::new();
    for &id in ids {
        let state = status(id, true).await.map(|status| ReplicaState {
            node: id,
            applied_index: status.digest_index,
            digest: status.digest,
        });
        states.push(state);
    }
    states
}

/// `Cluster::restarted_last` before any node restarted.
pub const NO_RESTART_YET: usize = usize::MAX;
