//! Bridges raft-rs's slog output into `tracing`.

use slog::{Drain, Level, Never, OwnedKVList, Record};

use crate::ids::NodeId;

/// A slog logger for raft-rs that forwards to `tracing` under target "raft".
pub(super) fn raft_logger(id: NodeId) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("node" => id.0))
}

struct TracingDrain;

impl Drain for TracingDrain {
    type Ok = ();
    type Err = Never;

    fn log(&self, record: &Record<'_>, _values: &OwnedKVList) -> Result<(), Never> {
        let message = record.msg();
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{message}"),
            Level::Warning => tracing::warn!(target: "raft", "{message}"),
            Level::Info => tracing::debug!(target: "raft", "{message}"),
            Level::Debug | Level::Trace => tracing::trace!(target: "raft", "{message}"),
        }
        Ok(())
    }
}
