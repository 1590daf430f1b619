//! Differential SQL testing: random SQL programs run on a 3-node deeb
//! cluster (the deterministic harness) and on plain SQLite, compared after
//! every request. See `core/tests/sql_differential.rs` for how to run it.

pub mod answer;
pub mod dump;
pub mod fake;
pub mod finding;
pub mod generator;
pub mod program;
pub mod reference;
pub mod refusals;
pub mod runner;
pub mod schema;
pub mod shrink;
pub mod target;
