//! Seams through which the simulator observes a node and injects the faults
//! madsim's network and clock lack: duplicated and reordered peer messages,
//! a per-node clock that drifts and jumps, and worker jobs (SQL batches,
//! snapshots) that take time. `deeb serve` leaves them all
//! empty, and then they cost nothing.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deeb_core::{NodeEvent, NodeId};

/// Sees a node's events; shared by the node's restarts.
pub type SharedObserver = Arc<dyn Fn(NodeId, &NodeEvent) + Send + Sync>;

/// The simulator's hooks into one node.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Sees the core's events (leaders, applied entries, crash points).
    pub observer: Option<SharedObserver>,
    /// The node's own clock, instead of the host's.
    pub clock: Option<Arc<dyn NodeClock>>,
    /// Faults on the node's outgoing peer messages.
    pub transport: Option<Arc<dyn TransportFaults>>,
    /// How long each job off the event loop takes, beyond its own work.
    pub work_time: Option<Arc<dyn WorkTime>>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("observer", &self.observer.is_some())
            .field("clock", &self.clock.is_some())
            .field("transport", &self.transport.is_some())
            .field("work_time", &self.work_time.is_some())
            .finish()
    }
}

/// The time a job on the node's worker (a leader's batch of SQL, applying
/// entries, a snapshot, a digest) takes before it does its work: under the simulator,
/// where SQL takes no simulated time, it is how statements that run for
/// seconds are modelled.
pub trait WorkTime: Send + Sync {
    /// The delay of the next job of this kind.
    fn draw(&self, job: Job) -> Duration;
}

/// The kinds of job a node runs off its event loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    /// A leader's batch of client SQL.
    Batch,
    /// Committed entries to apply.
    Apply,
    /// A snapshot to take.
    Snapshot,
    /// A received snapshot to install.
    Install,
    /// A state digest (a full scan).
    Digest,
    /// Removing a file the node no longer keeps.
    RemoveFile,
}

/// A node's clock: may run fast or slow and jump either way. The core never
/// lets its own time go backwards.
pub trait NodeClock: Send + Sync {
    /// What the node reads when `elapsed` has really passed since it started.
    fn read(&self, elapsed: Duration) -> Duration;
}

/// Faults injected on one node's outgoing raft batches.
pub trait TransportFaults: Send + Sync {
    /// How to deliver the next batch from `from` to `to`.
    fn plan(&self, from: NodeId, to: NodeId) -> Delivery;
}

/// How one batch travels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Hold the batch back this long; later batches may overtake it.
    pub delay: Duration,
    /// Deliver an extra copy after each of these delays.
    pub copies: Vec<Duration>,
}
