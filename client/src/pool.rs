//! One connection (a multiplexed HTTP/2 channel) per node, opened on first
//! use and reused by every call to that node: by clients, and by a node
//! forwarding requests to its leader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::{Error, GrpcClient, MESSAGE_BYTES_MAX};

type EndpointHook = Arc<dyn Fn(Endpoint) -> Endpoint + Send + Sync>;

/// Channels by node address.
#[derive(Clone)]
pub struct Pool {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    connect_timeout: Duration,
    hook: Option<EndpointHook>,
    tls: Option<TlsConfig>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<String> = self.channels.lock().expect("pool lock").keys().cloned().collect();
        formatter.debug_struct("Pool").field("nodes", &nodes).finish()
    }
}

impl Pool {
    /// An empty pool; `hook` (TLS settings, say) is applied to every
    /// endpoint before it connects.
    pub fn new(connect_timeout: Duration, hook: Option<EndpointHook>) -> Pool {
        Pool { channels: Arc::default(), connect_timeout, hook, tls: None }
    }

    /// The same pool, connecting over TLS with `tls` (https) if given. The
    /// certificate must name the host of each address the pool connects to.
    pub fn with_tls(mut self, tls: Option<TlsConfig>) -> Pool {
        self.tls = tls;
        self
    }

    /// A client on the pooled channel to `address` (`host:port`, with or
    /// without a scheme). The channel connects on first use and reconnects
    /// after a failure by itself.
    ///
    /// # Errors
    /// The address is not a valid URI.
    pub fn client(&self, address: &str) -> Result<GrpcClient, Error> {
        Ok(with_message_limits(GrpcClient::new(self.channel(address)?)))
    }

    /// The pooled channel to `address`.
    ///
    /// # Errors
    /// The address is not a valid URI.
    pub fn channel(&self, address: &str) -> Result<Channel, Error> {
        let mut channels = self.channels.lock().expect("pool lock");
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let bad = |error: tonic::transport::Error| Error::transport(format!("bad address {address:?}: {error}"));
        let endpoint = match &self.tls {
            None => Endpoint::from_shared(uri_of(address)).map_err(bad)?,
            Some(tls) => tls_endpoint(address, tls).map_err(bad)?,
        };
        let endpoint = endpoint.connect_timeout(self.connect_timeout);
        let endpoint = match &self.hook {
            Some(hook) => hook(endpoint),
            None => endpoint,
        };
        let channel = endpoint.connect_lazy();
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Addresses with a channel in the pool.
    pub fn len(&self) -> usize {
        self.channels.lock().expect("pool lock").len()
    }

    /// True if no channel was opened yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `client` sending and accepting messages up to [`MESSAGE_BYTES_MAX`]:
/// tonic's default 4 MiB would refuse a large value deeb accepted.
pub fn with_message_limits(client: GrpcClient) -> GrpcClient {
    // madsim's transport does not encode messages: no limit there.
    #[cfg(not(madsim))]
    let client = client.max_decoding_message_size(MESSAGE_BYTES_MAX).max_encoding_message_size(MESSAGE_BYTES_MAX);
    #[cfg(madsim)]
    let _ = MESSAGE_BYTES_MAX;
    client
}

/// TLS settings for channels: tonic's `ClientTlsConfig`.
#[cfg(not(madsim))]
pub use tonic::transport::ClientTlsConfig as TlsConfig;

/// TLS settings for channels: nothing under the simulator, whose transport
/// has no TLS.
#[cfg(madsim)]
#[derive(Clone, Debug, Default)]
pub struct TlsConfig;

/// An endpoint reaching `address` (`host:port`, any scheme given is
/// replaced) over TLS with `tls`; the server's certificate must name the host.
///
/// # Errors
/// A malformed address.
pub fn tls_endpoint(address: &str, tls: &TlsConfig) -> Result<Endpoint, tonic::transport::Error> {
    let bare = address.trim_start_matches("https://").trim_start_matches("http://");
    let endpoint = Endpoint::from_shared(format!("https://{bare}"))?;
    #[cfg(not(madsim))]
    let endpoint = endpoint.tls_config(tls.clone())?;
    #[cfg(madsim)]
    let _ = tls;
    Ok(endpoint)
}

/// `host:port` as a URI tonic accepts.
pub fn uri_of(address: &str) -> String {
    if address.starts_with("http://") || address.starts_with("https://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_gets_a_scheme() {
        assert_eq!(uri_of("127.0.0.1:7001"), "http://127.0.0.1:7001");
        assert_eq!(uri_of("http://a:1"), "http://a:1");
    }
}
