//! The `deeb` command line: `serve`, the client commands, `dev` and `bench`.

pub mod args;
pub mod bench;
pub mod commands;
#[cfg(not(madsim))]
pub mod dev;
pub mod shell;
pub mod split;
pub mod table;
