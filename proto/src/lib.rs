//! deeb's protobuf messages: the replicated log `Command`, the peer transport
//! and the client API. Generated code only; no logic lives here.

#![allow(clippy::all, clippy::pedantic)]

/// Version 1 of the wire and log formats.
pub mod v1 {
    tonic::include_proto!("deeb.v1");
}

pub use v1::*;
