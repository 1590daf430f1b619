//! deeb's protobuf messages: the replicated log `Command`, the peer transport
//! and the client API (services with the `grpc` feature). Generated code
//! only; no logic lives here.

#![allow(clippy::all, clippy::pedantic)]

/// Version 1 of the wire and log formats.
pub mod v1 {
    #[cfg(not(madsim))]
    include!(concat!(env!("OUT_DIR"), "/deeb.v1.rs"));
    // madsim-tonic-build writes the simulated services beside the real ones.
    #[cfg(madsim)]
    include!(concat!(env!("OUT_DIR"), "/sim/deeb.v1.rs"));
}

pub use v1::*;
