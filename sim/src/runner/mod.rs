//! The simulator proper: runs the real server code (`deeb_server::run_node`)
//! on madsim's simulated network and clock, one seed at a time.

pub mod mutants;
pub mod swarm;

#[cfg(madsim)]
mod cluster;
#[cfg(madsim)]
mod faults;
#[cfg(madsim)]
mod run;
#[cfg(madsim)]
mod workload;

#[cfg(madsim)]
pub use run::{check_determinism, determinism_canary, run_seed, RunOptions, RunReport};
