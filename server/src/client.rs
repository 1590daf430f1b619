//! Client-side helpers: connecting to a node, and forwarding a request to
//! the leader with a marker so it is never forwarded twice.

use std::time::Duration;

use deeb_proto::deeb_client::DeebClient;
use tonic::transport::Channel;
use tonic::Request;

use crate::security::{Principal, Security};

/// The metadata key that marks a request forwarded by another node.
pub const FORWARDED_KEY: &str = "x-deeb-forwarded";

/// Opens a channel to another node's peer listener at `address`
/// (`host:port`), with peer TLS if configured, bounding the connection
/// attempt by `connect_timeout`.
///
/// # Errors
/// A malformed address or a failed connection.
pub async fn channel(
    security: &Security,
    address: &str,
    connect_timeout: Duration,
) -> Result<Channel, tonic::transport::Error> {
    security.peer_endpoint(address)?.connect_timeout(connect_timeout).connect().await
}

/// A client API connection to another node's peer listener at `address`.
///
/// # Errors
/// A malformed address or a failed connection.
pub async fn connect(security: &Security, address: &str) -> Result<DeebClient<Channel>, tonic::transport::Error> {
    Ok(deeb_client::with_message_limits(DeebClient::new(channel(security, address, CONNECT_TIMEOUT).await?)))
}

/// Wraps `message` in a request marked as forwarded.
pub fn forwarded<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(FORWARDED_KEY, tonic::metadata::MetadataValue::from_static("1"));
    request
}

/// Wraps `message` in a request forwarded on behalf of `principal` (the
/// receiving node believes the name only on its peer listener).
pub fn forwarded_for<T>(message: T, principal: &Principal) -> Request<T> {
    let mut request = forwarded(message);
    crate::security::forward_as(&mut request, principal);
    request
}

/// True if another node forwarded this request.
pub fn is_forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED_KEY)
}

pub use deeb_client::uri_of;

/// Bound on connecting to a node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_marker_round_trips() {
        assert!(is_forwarded(&forwarded(())));
        assert!(!is_forwarded(&Request::new(())));
    }
}
