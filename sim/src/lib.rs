//! deeb's deterministic simulator: the parts that are a library, so that both the simulator binary and
//! its tests can use them.

pub mod checker;
