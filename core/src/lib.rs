//! deeb-core: the sans-IO node (work in progress).

pub mod config;
pub mod disk;
pub mod ids;
pub mod log;
pub mod node;
pub mod sql;

pub use config::{Config, Limits};
pub use ids::{LogIndex, NodeId, Term};
pub use node::{
    AdminError, ClientToken, Consistency, MemberChange, Node, OpenError, Output, PeerError, ReadError, Role, Status,
    WriteError, WriteOutcome,
};
