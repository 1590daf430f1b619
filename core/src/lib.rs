//! deeb-core: the sans-IO node (work in progress).

pub mod config;
pub mod disk;
pub mod ids;
pub mod log;
pub mod sql;
