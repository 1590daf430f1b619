//! Who may reach a node and what they may do: TLS on the client and peer
//! listeners (and on calls between nodes), users and permissions, and the
//! limits on connections. Shared by both listeners; under the simulator
//! (whose transport has neither sockets nor TLS) nothing here is
//! configured and every check passes, and the listeners themselves
//! ([`listener`]) are not built.

pub mod certs;
#[cfg(not(madsim))]
pub mod listener;
pub mod tls;
pub mod users;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use deeb_client::TlsConfig;
use tonic::transport::Endpoint;
use tonic::{Request, Status};

use tls::{Reloadable, TlsError, TlsFiles};
pub use users::{AuthError, Credentials, Permission, Principal, Users, UsersFileError};

/// The security flags of `deeb serve`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecurityConfig {
    /// The client listener's certificate, key, and (to require client
    /// certificates) the CA they must chain to.
    pub client_tls: Option<TlsFiles>,
    /// This node's certificate and key on the peer listener and on its
    /// calls to other nodes, and the CA every node's certificate chains to.
    pub peer_tls: Option<TlsFiles>,
    /// The users file (`--auth`); without it every call is allowed.
    pub auth: Option<PathBuf>,
    pub limits: ConnectionLimits,
}

/// Bounds on what one listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections served at once per listener.
    pub max_connections: usize,
    /// HTTP/2 streams (calls) in flight per connection.
    pub max_streams_per_connection: u32,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 10_000,
            max_streams_per_connection: 256,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Clients,
    Peers,
    /// Single-port mode (tests, `deeb dev` trials, the simulator).
    Both,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Clients => "clients",
            Side::Peers => "peers",
            Side::Both => "clients and peers",
        }
    }
}

/// What a request's connection tells about its caller (tonic hands it to
/// every request as an extension).
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub side: Side,
    pub remote: Option<std::net::SocketAddr>,
    /// The caller's verified certificate (DER), if it gave one.
    pub peer_cert: Option<Arc<rustls::pki_types::CertificateDer<'static>>>,
    /// Accepted past the connection limit: every call gets an error.
    pub over_limit: bool,
}

/// Settings that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("users file: {0}")]
    Users(#[from] UsersFileError),
}

/// The loaded settings, shared by the listeners, the services and the
/// node's outgoing calls; [`Security::reload`] reads the files again.
pub struct Security {
    config: SecurityConfig,
    client_server: Option<Arc<Reloadable<rustls::ServerConfig>>>,
    peer_server: Option<Arc<Reloadable<rustls::ServerConfig>>>,
    peer_channel: Option<Reloadable<TlsConfig>>,
    users: Option<Reloadable<Users>>,
    /// Bumped by every successful reload (pools of channels start afresh).
    generation: std::sync::atomic::AtomicU64,
    /// Password and token checks running (argon2 is slow by design).
    sign_ins: tokio::sync::Semaphore,
    refused_sign_ins: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material the TLS settings hold.
        formatter
            .debug_struct("Security")
            .field("client_tls", &self.client_server.is_some())
            .field("peer_tls", &self.peer_server.is_some())
            .field("users", &self.users.is_some())
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

/// Password and token checks at once per node.
const SIGN_INS_IN_FLIGHT_MAX: usize = 2;

/// Who a node's own calls to another node (joins) run as.
pub const NODE_PRINCIPAL: &str = "@node";

/// Metadata naming the user a forwarding node authenticated.
pub const PRINCIPAL_KEY: &str = "x-deeb-principal";

impl Security {
    /// Loads every file `config` names.
    ///
    /// # Errors
    /// A file that cannot be read or used.
    pub fn load(config: &SecurityConfig) -> Result<Security, SecurityError> {
        let loaded = Loaded::read(config)?;
        Ok(Security {
            config: config.clone(),
            client_server: loaded.client_server.map(|c| Arc::new(Reloadable::new(c))),
            peer_server: loaded.peer_server.map(|c| Arc::new(Reloadable::new(c))),
            peer_channel: loaded.peer_channel.map(Reloadable::new),
            users: loaded.users.map(Reloadable::new),
            generation: std::sync::atomic::AtomicU64::new(0),
            sign_ins: tokio::sync::Semaphore::new(SIGN_INS_IN_FLIGHT_MAX),
            refused_sign_ins: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// No TLS, no users: what the simulator and plain `deeb dev` run with.
    pub fn open() -> Security {
        Security::load(&SecurityConfig::default()).expect("nothing to load")
    }

    /// Reads every file again; on any error the previous settings stay.
    ///
    /// # Errors
    /// The first file that could not be used.
    pub fn reload(&self) -> Result<(), SecurityError> {
        let loaded = Loaded::read(&self.config)?;
        fn swap<T>(slot: Option<&Reloadable<T>>, value: Option<T>) {
            if let (Some(slot), Some(value)) = (slot, value) {
                slot.replace(value);
            }
        }
        swap(self.client_server.as_deref(), loaded.client_server);
        swap(self.peer_server.as_deref(), loaded.peer_server);
        swap(self.peer_channel.as_ref(), loaded.peer_channel);
        swap(self.users.as_ref(), loaded.users);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// How many times the files were read again.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// TLS settings for channels to other nodes' peer listeners, if any.
    pub fn peer_channel_tls(&self) -> Option<TlsConfig> {
        self.peer_channel.as_ref().map(|tls| tls.current().as_ref().clone())
    }

    pub fn config(&self) -> &SecurityConfig {
        &self.config
    }

    /// True if a users file is in force.
    pub fn has_users(&self) -> bool {
        self.users.is_some()
    }

    /// The client listener's TLS, if any.
    pub fn client_tls(&self) -> Option<Arc<Reloadable<rustls::ServerConfig>>> {
        self.client_server.clone()
    }

    /// The peer listener's TLS, if any.
    pub fn peer_tls(&self) -> Option<Arc<Reloadable<rustls::ServerConfig>>> {
        self.peer_server.clone()
    }

    /// An endpoint for calling another node's peer listener at `address`:
    /// with peer TLS, over https, presenting this node's certificate and
    /// checking that the other's chains to the peer CA and names the
    /// address's host.
    ///
    /// # Errors
    /// A malformed address.
    pub fn peer_endpoint(&self, address: &str) -> Result<Endpoint, tonic::transport::Error> {
        match &self.peer_channel {
            None => Endpoint::from_shared(deeb_client::uri_of(address)),
            Some(tls) => deeb_client::tls_endpoint(address, &tls.current()),
        }
    }

    /// Authenticates the caller of a client API request and checks that it
    /// may do what `permission` covers. A request forwarded by another node
    /// over the peer listener names the user that node authenticated; a
    /// node's own call there (a join) may change membership and see status,
    /// nothing else. Checking a password or token runs off the async
    /// workers, a few at a time: past that, callers are told to retry.
    ///
    /// # Errors
    /// `ResourceExhausted` past the connection limit or the sign-in checks
    /// in flight, `Unauthenticated`, or `PermissionDenied`.
    pub fn admit<T>(
        self: &Arc<Self>,
        request: &Request<T>,
        permission: Permission,
    ) -> impl std::future::Future<Output = Result<Principal, Status>> + Send + 'static {
        // Everything taken from the request now, so the future owns it all.
        let conn = request.extensions().get::<ConnInfo>().cloned();
        let checked = self.refuse_over_limit(conn.as_ref()).and_then(|()| {
            let on_peers = conn.as_ref().is_some_and(|conn| conn.side == Side::Peers);
            if on_peers && !crate::client::is_forwarded(request) {
                return Ok(Some(Credentials::Forwarded(NODE_PRINCIPAL.to_owned())));
            }
            let users = self.users.is_some();
            users.then(|| credentials(request, conn.as_ref()).map_err(Status::unauthenticated)).transpose()
        });
        let security = self.clone();
        async move {
            let Some(users) = security.users.as_ref().map(Reloadable::current) else {
                return checked.map(|_| Principal::anonymous());
            };
            let Some(credentials) = checked? else { return Ok(Principal::anonymous()) };
            if credentials == Credentials::Forwarded(NODE_PRINCIPAL.to_owned()) {
                return match permission {
                    Permission::Membership | Permission::Status => Ok(Principal(NODE_PRINCIPAL.to_owned())),
                    _ => Err(Status::permission_denied("a node's own calls may only join and read status")),
                };
            }
            let remote = conn.and_then(|conn| conn.remote);
            let principal = security.authenticate(&users, credentials, remote).await?;
            users.authorize(&principal, permission).map_err(|error| Status::permission_denied(error.to_string()))?;
            Ok(principal)
        }
    }

    /// Checks `credentials`: a password or token on the blocking pool,
    /// at most `SIGN_INS_IN_FLIGHT_MAX` at once (unless already verified).
    async fn authenticate(
        &self,
        users: &Arc<Users>,
        credentials: Credentials,
        remote: Option<std::net::SocketAddr>,
    ) -> Result<Principal, Status> {
        let result = if users.is_verified(&credentials) {
            users.authenticate(&credentials)
        } else {
            let Ok(_permit) = self.sign_ins.try_acquire() else {
                return Err(Status::resource_exhausted(
                    "too many sign-ins being checked at once on this node; retry shortly",
                ));
            };
            let (users, checked) = (users.clone(), credentials.clone());
            // The simulator has no blocking pool (and never configures users).
            #[cfg(madsim)]
            let checked = users.authenticate(&checked);
            #[cfg(not(madsim))]
            let checked = tokio::task::spawn_blocking(move || users.authenticate(&checked))
                .await
                .map_err(|_| Status::internal("the sign-in check failed"))?;
            checked
        };
        result.map_err(|error| {
            let refused = self.refused_sign_ins.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            // A flood of bad sign-ins must not flood the log either.
            if refused.is_power_of_two() {
                tracing::info!(?credentials, ?remote, refused, "authentication refused");
            }
            Status::unauthenticated(error.to_string())
        })
    }

    /// Checks a peer service call: past the connection limit it is
    /// refused; over peer TLS the caller's certificate must name the host
    /// of the address it gives as its own (`from_address`; `None` for a
    /// snapshot stream, which names none: the chain to the peer CA is all).
    ///
    /// # Errors
    /// `ResourceExhausted` or `PermissionDenied`.
    pub fn admit_peer(&self, conn: Option<&ConnInfo>, from_address: Option<&str>) -> Result<(), Status> {
        self.refuse_over_limit(conn)?;
        let Some(from_address) = from_address else { return Ok(()) };
        let Some(cert) = conn.and_then(|conn| conn.peer_cert.as_deref()) else { return Ok(()) };
        if !from_address.is_empty() && tls::names_host(cert, tls::host_of(from_address)) {
            return Ok(());
        }
        tracing::warn!(from_address, "peer certificate does not name the address the peer gives");
        Err(Status::permission_denied(format!("this peer's certificate does not name {from_address}")))
    }

    fn refuse_over_limit(&self, conn: Option<&ConnInfo>) -> Result<(), Status> {
        match conn {
            Some(conn) if conn.over_limit => Err(Status::resource_exhausted(format!(
                "too many connections: this node serves at most {} at once on its {} listener",
                self.config.limits.max_connections,
                conn.side.name()
            ))),
            _ => Ok(()),
        }
    }
}

/// Everything the files hold, read before any of it is used.
struct Loaded {
    client_server: Option<rustls::ServerConfig>,
    peer_server: Option<rustls::ServerConfig>,
    peer_channel: Option<TlsConfig>,
    users: Option<Users>,
}

impl Loaded {
    fn read(config: &SecurityConfig) -> Result<Loaded, SecurityError> {
        let client_server = config.client_tls.as_ref().map(tls::server_config).transpose()?;
        let peer_server = config.peer_tls.as_ref().map(tls::server_config).transpose()?;
        let peer_channel = config
            .peer_tls
            .as_ref()
            .map(|files| tls::channel_config(files.ca.as_deref(), Some((&files.cert, &files.key))))
            .transpose()?;
        let users = config.auth.as_deref().map(Users::load).transpose()?;
        Ok(Loaded { client_server, peer_server, peer_channel, users })
    }
}

/// How the caller of `request` claims to be someone: the forwarding node's
/// word (trusted only on the peer listener), else `authorization` metadata,
/// else a client certificate's common name, else nobody.
fn credentials<T>(request: &Request<T>, conn: Option<&ConnInfo>) -> Result<Credentials, String> {
    // No connection info: the simulator's transport, single-port only.
    let side = conn.map_or(Side::Both, |conn| conn.side);
    let metadata = request.metadata();
    if side != Side::Clients && crate::client::is_forwarded(request) {
        let name = metadata.get(PRINCIPAL_KEY).and_then(|value| value.to_str().ok()).unwrap_or(users::ANONYMOUS);
        return Ok(Credentials::Forwarded(name.to_owned()));
    }
    if let Some(value) = metadata.get("authorization") {
        let value = value.to_str().map_err(|_| "unreadable authorization metadata".to_owned())?;
        return parse_authorization(value);
    }
    let name = conn.and_then(|conn| conn.peer_cert.as_deref()).and_then(|cert| tls::common_name(cert));
    Ok(name.map_or(Credentials::None, Credentials::Certificate))
}

/// `Basic base64(user:password)` or `Bearer user:token`.
fn parse_authorization(value: &str) -> Result<Credentials, String> {
    let malformed =
        || "malformed authorization: expected \"Basic base64(user:password)\" or \"Bearer user:token\"".to_owned();
    let (scheme, rest) = value.trim().split_once(' ').ok_or_else(malformed)?;
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).map_err(|_| malformed())?;
        let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
        let (user, password) = decoded.split_once(':').ok_or_else(malformed)?;
        Ok(Credentials::Password { user: user.to_owned(), password: password.to_owned() })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let (user, token) = rest.trim().split_once(':').ok_or_else(malformed)?;
        Ok(Credentials::Token { user: user.to_owned(), token: token.to_owned() })
    } else {
        Err(malformed())
    }
}

/// The `authorization` metadata value for `user` and `password` (HTTP Basic).
pub fn basic_authorization(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Marks `request` as forwarded on behalf of `principal`.
pub fn forward_as<T>(request: &mut Request<T>, principal: &Principal) {
    if let Ok(value) = principal.0.parse() {
        request.metadata_mut().insert(PRINCIPAL_KEY, value);
    }
}

/// Watches for SIGHUP and reloads `security` on each (real processes only).
#[cfg(not(madsim))]
pub fn reload_on_sighup(security: Arc<Security>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP; certificates and users are read only at start");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match security.reload() {
                Ok(()) => tracing::info!("SIGHUP: certificates and users file read again"),
                Err(error) => tracing::error!(%error, "SIGHUP: reload failed; the previous settings stay"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_metadata_parses() {
        let basic = basic_authorization("reader", "pa:ss");
        assert_eq!(
            parse_authorization(&basic),
            Ok(Credentials::Password { user: "reader".into(), password: "pa:ss".into() })
        );
        assert_eq!(
            parse_authorization("Bearer admin:t0ken"),
            Ok(Credentials::Token { user: "admin".into(), token: "t0ken".into() })
        );
        for bad in ["Basic", "Basic !!!", "Digest abc", "Bearer no-user", ""] {
            assert!(parse_authorization(bad).is_err(), "{bad}");
        }
    }

    fn request_on(side: Side, forwarded_as: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(name) = forwarded_as {
            request = crate::client::forwarded(());
            forward_as(&mut request, &Principal(name.into()));
        }
        request.extensions_mut().insert(ConnInfo { side, remote: None, peer_cert: None, over_limit: false });
        request
    }

    #[test]
    fn a_forwarded_user_is_believed_only_on_the_peer_listener() {
        let on_peers = request_on(Side::Peers, Some("admin"));
        assert_eq!(credentials(&on_peers, on_peers.extensions().get()), Ok(Credentials::Forwarded("admin".into())));
        let on_clients = request_on(Side::Clients, Some("admin"));
        assert_eq!(credentials(&on_clients, on_clients.extensions().get()), Ok(Credentials::None));
    }

    /// A node's own call on the peer listener may join and read status,
    /// nothing else; the same call on the client listener is a stranger's.
    #[tokio::test]
    async fn a_node_call_may_only_join_and_read_status() {
        let dir = tempfile::tempdir().expect("dir");
        let auth = dir.path().join("users.json");
        std::fs::write(&auth, r#"[{"username": "*", "perms": []}]"#).expect("write");
        let config = SecurityConfig { auth: Some(auth), ..SecurityConfig::default() };
        let security = Arc::new(Security::load(&config).expect("loads"));
        let on_peers = request_on(Side::Peers, None);
        assert!(security.admit(&on_peers, Permission::Membership).await.is_ok());
        assert!(security.admit(&on_peers, Permission::Status).await.is_ok());
        for permission in [Permission::Execute, Permission::Query, Permission::Backup] {
            let refused = security.admit(&on_peers, permission).await.expect_err("not a node's to do");
            assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        }
        let on_clients = request_on(Side::Clients, None);
        let refused = security.admit(&on_clients, Permission::Membership).await.expect_err("anonymous");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    }

    #[tokio::test]
    async fn past_the_connection_limit_every_call_is_refused() {
        let security = Arc::new(Security::open());
        let mut request = request_on(Side::Clients, None);
        assert!(security.admit(&request, Permission::Query).await.is_ok());
        request.extensions_mut().get_mut::<ConnInfo>().expect("info").over_limit = true;
        let refused = security.admit(&request, Permission::Query).await.expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("10000"), "{}", refused.message());
    }
}
