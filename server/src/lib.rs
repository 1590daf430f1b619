//! deeb-server: the host around deeb-core's sans-IO `Node`.
//!
//! One task (the [event loop](event_loop)) owns the node. Everything else
//! talks to it through bounded channels: the gRPC client API ([`api`]), the
//! peer service and per-peer sender tasks ([`peer`]), snapshot streams
//! ([`snapshot`]). [`run_node`] wires them together; the `deeb` binary and
//! the simulator both call it. No OS threads or hand-built runtimes are
//! used on these paths, so the same code runs under madsim.

pub mod api;
pub mod backend;
pub mod backup;
pub mod client;
pub mod config;
pub mod errors;
pub mod event_loop;
pub mod handle;
pub mod hooks;
#[cfg(not(madsim))]
pub mod http;
pub mod identity;
pub mod metrics;
pub mod peer;
pub mod query;
pub mod restore;
pub mod scheduled;
pub mod security;
pub mod server;
pub mod snapshot;
pub mod watch;

pub use config::ServeConfig;
pub use errors::{to_status, ServerError};
pub use handle::NodeHandle;
pub use hooks::{Delivery, Hooks, Job, NodeClock, SharedObserver, TransportFaults, WorkTime};
pub use server::{run_node, ServeError};
