//! deeb's deterministic simulator: the parts that are a library, so that both
//! the simulator binary and its tests can use them. `checker` holds the pure
//! history checkers (built and unit-tested in normal builds too); `runner`
//! runs the real server under madsim (`--cfg madsim` builds only, except its
//! pure parts).

pub mod checker;
pub mod runner;
pub mod sqlite_files;
