//! deeb-core: the sans-IO, deterministic heart of deeb.
//!
//! A [`Node`] is raft-rs's `RawNode` over our own durable log
//! ([`log::LogStore`] on a [`disk::Disk`]) and a [`StateMachine`]: by
//! default SQLite with row-change capture ([`sql::SqliteStateMachine`];
//! [`Node::open_with`] takes any other). It opens no sockets, spawns no
//! threads and reads no clock: time, peer messages and client requests come
//! in as method arguments, and effects come out as [`Output`]s. The only I/O
//! it does itself is disk I/O (the log through the `Disk` trait, SQLite and
//! snapshot files in the data directory).
//!
//! # How a host drives a node
//!
//! 1. Feed one input: [`Node::handle_timeout`] when [`Node::poll_timeout`]
//!    is due, [`Node::step`] with a peer's raft messages,
//!    [`Node::submit_write`] / [`Node::submit_read`] for clients,
//!    [`Node::change_membership`] / [`Node::transfer_leader`] for admins,
//!    [`Node::install_received`] with a snapshot file received through a
//!    [`node::SnapshotReceiver`], [`Node::batch_executed`],
//!    [`Node::entries_applied`] and [`Node::snapshot_taken`] when work it
//!    handed out is done, and
//!    [`Node::report_snapshot`] /
//!    [`Node::report_unreachable`] with the fate of earlier sends. Every
//!    input takes `now`, the host's monotonic time since it started.
//! 2. Drain [`Node::poll_output`] until it returns `None`, carrying out
//!    each output in order: send peer messages (they are already durable
//!    where raft requires it), stream snapshots, answer clients, on
//!    [`Output::ReadReady`] run the client's query on a [`Node::reader`].
//!    Two outputs hand heavy work to a worker (a thread in the server, a
//!    task in the simulator, inline in the deterministic harness) while
//!    the node goes on with raft ticks, heartbeats, votes and reads:
//!    - [`Output::ExecuteBatch`]: the leader's next group of client
//!      requests. [`Node::batch_to_execute`] hands over the batch *with the
//!      state machine*; the worker runs [`node::BatchToExecute::execute`]
//!      (every request's SQL, in one open transaction) and the host returns
//!      the result with [`Node::batch_executed`]. Only then is the batch
//!      proposed as one log entry (if this node still leads in the same
//!      term at the same index; otherwise its requests run again or are
//!      told "not the leader"). The transaction stays open with the
//!      batch kept in it, and the next batch may execute on top of it
//!      while its entry replicates (the leader's pipeline, up to
//!      `Limits::batches_in_flight_max`). Committed entries wait for the state
//!      machine to come back and apply in log order; reads are served
//!      meanwhile from [`Node::readers`], which need no state machine.
//!    - [`Output::ApplyEntries`]: a run of committed entries to apply.
//!      [`Node::entries_to_apply`] hands over the steps the node planned
//!      (commit the leader's open transaction at the last of its own
//!      entries kept in it, apply the row changes of another's, record an
//!      empty entry) with the state machine; the worker runs
//!      [`node::EntriesToApply::apply`] and the host returns it with
//!      [`Node::entries_applied`], after which the node answers those
//!      entries' clients ([`Output::WriteDone`]; the leader answers its
//!      own batches' clients when their entries commit).
//!      Membership changes, rare and small, apply on the node between runs.
//!    - [`Output::TakeSnapshot`]: a snapshot of the applied state from one
//!      read transaction, [`Node::snapshot_to_take`] run on the worker
//!      ([`node::SnapshotToTake::take`], which also reads the file back for
//!      its checksum) and reported with [`Node::snapshot_taken`].
//!
//!    - [`Output::InstallSnapshot`]: a snapshot raft accepted from the
//!      leader. [`Node::snapshot_to_install`] hands over the received file
//!      with the state machine; the worker runs
//!      [`node::SnapshotToInstall::install`] (a copy of the whole file into
//!      the database) and the host returns it with
//!      [`Node::snapshot_installed`]. The ready that held the snapshot
//!      waits for it (the log is compacted to it only then); raft ticks and
//!      takes messages meanwhile.
//!    - [`Output::RemoveFile`]: a snapshot file the node no longer keeps,
//!      to unlink (gigabytes take a while to free).
//!
//!    The state machine is in one place at a time: while it is away,
//!    committed entries wait, no batch starts, and a received snapshot
//!    waits to be installed.
//! 3. Sleep until [`Node::poll_timeout`] or the next input, then go to 1.
//!
//! Once, after opening, a host may hand the node its clock with
//! [`Node::set_clock`]: the only clock reading the core does is through it,
//! to stop a client's write statement at its deadline while it runs. Without
//! one (tests, the simulator) a deterministic bound on SQLite steps stops
//! statements instead. Client SQL never stops a node: a statement that fails,
//! rolls back its transaction or passes a bound is that request's error.
//!
//! The node never assumes an effect happened: the host reports completions
//! back as inputs. On [`Output::Stopped`] (a disk error, replica divergence,
//! or a broken invariant: see `Node::check_invariants`) the host must exit;
//! restarting recovers from disk.
//!
//! # Example
//!
//! A one-node cluster on an in-memory log disk:
//!
//! ```
//! use std::time::Duration;
//! use deeb_core::{disk::MemDisk, ClientToken, Config, Node, NodeId, Output};
//! use deeb_proto::Statement;
//!
//! let dir = tempfile::tempdir()?;
//! let members = [(NodeId(1), "127.0.0.1:7001".to_owned())];
//! let mut node = Node::open(Config::new(NodeId(1)), MemDisk::new(), dir.path(), &members, Duration::ZERO)?;
//! let mut now = Duration::ZERO;
//! let mut written = None;
//! for _ in 0..1000 {
//!     // 3. Sleep until the node's next deadline (here: jump to it).
//!     now = node.poll_timeout();
//!     // 1. Feed an input.
//!     node.handle_timeout(now);
//!     if node.status().role == deeb_core::Role::Leader && written.is_none() {
//!         let create = Statement { sql: "CREATE TABLE t (x)".into(), ..Default::default() };
//!         node.submit_write(now, ClientToken(1), vec![create])?;
//!         written = Some(false);
//!     }
//!     // 2. Drain the outputs.
//!     while let Some(output) = node.poll_output() {
//!         match output {
//!             Output::WriteDone { token: ClientToken(1), result } => {
//!                 result?;
//!                 written = Some(true);
//!             }
//!             Output::Stopped { reason } => panic!("{reason}"),
//!             // A host runs these on a worker; inline here.
//!             Output::ExecuteBatch => {
//!                 let batch = node.batch_to_execute().expect("announced");
//!                 node.batch_executed(now, batch.execute());
//!             }
//!             Output::ApplyEntries => {
//!                 let entries = node.entries_to_apply().expect("announced");
//!                 node.entries_applied(now, entries.apply());
//!             }
//!             Output::TakeSnapshot => {
//!                 let snapshot = node.snapshot_to_take().expect("announced");
//!                 node.snapshot_taken(now, snapshot.take());
//!             }
//!             _ => {} // A one-node cluster has no peers to send to.
//!         }
//!     }
//!     if written == Some(true) {
//!         break;
//!     }
//! }
//! assert_eq!(written, Some(true));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod config;
pub mod conformance;
pub mod disk;
pub mod ids;
pub mod log;
pub mod node;
pub mod sql;
pub mod state_machine;

pub use config::{Config, Limits, Mutations};
pub use ids::{LogIndex, NodeId, Term};
pub use node::{
    AdminError, ClientToken, Consistency, MemberChange, Node, NodeEvent, Observer, OpenError, Output, PeerError,
    ReadError, Role, Status, WriteError, WriteOutcome,
};
pub use state_machine::{Readers, SnapshotTaker, StateMachine, TakenSnapshot};
