//! The etcd v3 key-value calls `deeb bench --target etcd` makes, over
//! tonic with the two request messages written out by hand (etcd's
//! `rpc.proto` numbering): the benchmark needs Put and Range only, not a
//! client library.

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

use super::super::args::BenchConsistency;

/// `etcdserverpb.PutRequest` (the fields the benchmark sets).
#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `etcdserverpb.RangeRequest` (the fields the benchmark sets).
#[derive(Clone, PartialEq, prost::Message)]
struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    /// Served by the member from its own state, without a ReadIndex.
    #[prost(bool, tag = "7")]
    serializable: bool,
}

/// A response whose content the benchmark does not read (prost skips
/// the fields), decoded all the same.
#[derive(Clone, PartialEq, prost::Message)]
struct Ignored {}

/// One client's channel to one etcd member.
pub(super) struct EtcdConnection {
    grpc: tonic::client::Grpc<Channel>,
}

impl EtcdConnection {
    /// A new channel (not shared with any other client) to `address`.
    pub(super) fn open(address: &str) -> Result<Self, String> {
        let uri = deeb_client::uri_of(address);
        let endpoint = Endpoint::from_shared(uri).map_err(|error| format!("bad address {address:?}: {error}"))?;
        Ok(EtcdConnection { grpc: tonic::client::Grpc::new(endpoint.connect_lazy()) })
    }

    async fn call<M: prost::Message + Send + Sync + 'static>(
        &mut self,
        path: &'static str,
        message: M,
    ) -> Result<(), String> {
        self.grpc.ready().await.map_err(|error| error.to_string())?;
        let codec = ProstCodec::<M, Ignored>::default();
        let path = PathAndQuery::from_static(path);
        self.grpc.unary(tonic::Request::new(message), path, codec).await.map(drop).map_err(|status| status.to_string())
    }

    pub(super) async fn put(&mut self, key: u64, value: &[u8]) -> Result<(), String> {
        let request = PutRequest { key: key_of(key), value: value.to_vec() };
        self.call("/etcdserverpb.KV/Put", request).await
    }

    /// etcd reads are linearizable (a ReadIndex round) or serializable
    /// (the member's own state): lease maps to linearizable, stale to
    /// serializable.
    pub(super) async fn range(&mut self, key: u64, consistency: BenchConsistency) -> Result<(), String> {
        let serializable = consistency == BenchConsistency::Stale;
        self.call("/etcdserverpb.KV/Range", RangeRequest { key: key_of(key), serializable }).await
    }
}

fn key_of(key: u64) -> Vec<u8> {
    format!("bench/{key:010}").into_bytes()
}
