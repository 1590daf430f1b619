//! Client-side helpers: connecting to a node, and forwarding a request to
//! the leader with a marker so it is never forwarded twice.

use std::time::Duration;

use deeb_proto::deeb_client::DeebClient;
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

/// The metadata key that marks a request forwarded by another node.
pub const FORWARDED_KEY: &str = "x-deeb-forwarded";

/// Opens a channel to `address` (`host:port`, with or without `http://`),
/// bounding the connection attempt by `connect_timeout`.
///
/// # Errors
/// A malformed address or a failed connection.
pub async fn channel(address: &str, connect_timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(uri_of(address))?.connect_timeout(connect_timeout);
    endpoint.connect().await
}

/// A client API connection to `address`.
///
/// # Errors
/// A malformed address or a failed connection.
pub async fn connect(address: &str) -> Result<DeebClient<Channel>, tonic::transport::Error> {
    let client = DeebClient::new(channel(address, CONNECT_TIMEOUT).await?);
    // tonic's default 4 MiB would refuse a large value deeb accepted.
    // (madsim's transport does not encode messages: no limit there.)
    #[cfg(not(madsim))]
    let client =
        client.max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX).max_encoding_message_size(CLIENT_MESSAGE_BYTES_MAX);
    Ok(client)
}

/// The largest message deeb's own clients send or accept (the CLI, the
/// shell, a node forwarding to the leader). Every response a node makes
/// fits (`server::client_response_bytes_max`, checked by a test).
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 64 << 20;

/// Wraps `message` in a request marked as forwarded.
pub fn forwarded<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(FORWARDED_KEY, tonic::metadata::MetadataValue::from_static("1"));
    request
}

/// True if another node forwarded this request.
pub fn is_forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED_KEY)
}

/// `host:port` as a URI tonic accepts.
pub fn uri_of(address: &str) -> String {
    if address.starts_with("http://") || address.starts_with("https://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    }
}

/// Bound on connecting to a node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_gets_a_scheme() {
        assert_eq!(uri_of("127.0.0.1:7001"), "http://127.0.0.1:7001");
        assert_eq!(uri_of("http://a:1"), "http://a:1");
    }

    #[test]
    fn forwarded_marker_round_trips() {
        assert!(is_forwarded(&forwarded(())));
        assert!(!is_forwarded(&Request::new(())));
    }
}
