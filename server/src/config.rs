//! What `deeb serve` needs to run a node, and parsers for its flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use deeb_core::NodeId;
use thiserror::Error;

use crate::hooks::Hooks;
use crate::security::SecurityConfig;

/// The settings of one server process.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The core node's configuration (id, timing, limits).
    pub core: deeb_core::Config,
    /// Data directory: the log under `log/`, SQLite and snapshots beside it.
    pub data_dir: PathBuf,
    /// Where the client API listens (and, without `peer_listen`, the peer
    /// service too: single-port mode).
    pub listen: SocketAddr,
    /// Where the peer service (raft messages, snapshots) and requests
    /// forwarded from other nodes are served; `None` for single-port mode.
    pub peer_listen: Option<SocketAddr>,
    /// Where the HTTP API listens (real processes only), if anywhere.
    pub http_listen: Option<SocketAddr>,
    /// The address other nodes use to reach this node (its peer listener,
    /// or its one listener in single-port mode): what its member record holds.
    pub advertise: String,
    /// The address clients use to reach this node's client listener: other
    /// nodes hear it over the peer link and name it in their status.
    pub client_advertise: String,
    /// The address clients use to reach this node's HTTP API (empty: none),
    /// heard by other nodes like `client_advertise`: `/leader`, `/nodes`
    /// and `?redirect` name it.
    pub http_advertise: String,
    /// The initial voters of a new cluster (this node included), or empty.
    pub peers: Vec<(NodeId, String)>,
    /// Mixed into a new cluster's id with `peers` (see
    /// `crate::identity::ClusterId`).
    pub cluster_token: String,
    /// Join an existing cluster through these members' peer addresses,
    /// tried in turn (empty: do not join).
    pub join: Vec<String>,
    /// When joining, stay a non-voting learner.
    pub join_as_learner: bool,
    /// Bound on every client request's time inside the server.
    pub request_timeout: Duration,
    /// How long a query may run unless it asks otherwise; also the bound on
    /// a write statement (see `deeb_core::Config::write_statement_timeout`).
    pub statement_timeout: Duration,
    /// The longest a query may ask to run (`QueryRequest.timeout_ms`).
    pub statement_timeout_max: Duration,
    /// Bound on a graceful shutdown's leader transfer.
    pub shutdown_transfer_timeout: Duration,
    /// TLS, users and connection limits (`crate::security`).
    pub security: SecurityConfig,
    /// The simulator's observer and fault seams; empty for real.
    pub hooks: Hooks,
    /// Scheduled backups (`--backup-interval`, `--backup-dir`, `--backup-keep`).
    pub backups: Option<crate::scheduled::Schedule>,
    /// The MySQL/MariaDB server that holds this node's data (`--backend
    /// mysql --mysql-url`); `None`: SQLite in the data directory.
    pub mysql_url: Option<MysqlUrl>,
}

/// A MySQL URL, whose password never reaches a log (its `Debug` and
/// `Display` show `***` instead).
#[derive(Clone, PartialEq, Eq)]
pub struct MysqlUrl(pub String);

impl MysqlUrl {
    /// The URL with the password hidden.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else { return "***".into() };
        match rest.rsplit_once('@') {
            Some((user_password, host)) => {
                let user = user_password.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}:***@{host}")
            }
            None => self.0.clone(),
        }
    }
}

impl std::fmt::Debug for MysqlUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Display for MysqlUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl ServeConfig {
    /// A configuration with default timing for node `id` listening on `listen`.
    pub fn new(id: NodeId, data_dir: PathBuf, listen: SocketAddr) -> Self {
        let mut core = deeb_core::Config::new(id);
        // A real server bounds statements by the clock (--statement-timeout);
        // the core's deterministic steps bound would cut them shorter. Under
        // the simulator time stands still while SQL runs: keep that bound.
        if !cfg!(madsim) {
            core.limits.statement_steps_max = u64::MAX;
        }
        Self {
            core,
            data_dir,
            listen,
            peer_listen: None,
            http_listen: None,
            advertise: listen.to_string(),
            client_advertise: listen.to_string(),
            http_advertise: String::new(),
            peers: Vec::new(),
            cluster_token: String::new(),
            join: Vec::new(),
            join_as_learner: false,
            request_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(5),
            statement_timeout_max: Duration::from_secs(60),
            shutdown_transfer_timeout: Duration::from_secs(3),
            security: SecurityConfig::default(),
            hooks: Hooks::default(),
            backups: None,
            mysql_url: None,
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.core.id
    }

    /// Checks that the settings make sense together.
    ///
    /// Where clients reach this node.
    pub fn advertised(&self) -> crate::peer::Advertised {
        crate::peer::Advertised { client: self.client_advertise.clone(), http: self.http_advertise.clone() }
    }

    /// # Errors
    /// Neither or both of `peers` and `join`; this node missing from `peers`
    /// or listed with another address.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.core.id.0 == 0 {
            return Err(ConfigError::Invalid("--id must be non-zero".into()));
        }
        if !self.peers.is_empty() && !self.join.is_empty() {
            return Err(ConfigError::Invalid("give either --peers or --join, not both".into()));
        }
        if !self.peers.is_empty() && !self.peers.iter().any(|(id, _)| *id == self.core.id) {
            return Err(ConfigError::Invalid(format!("--peers must include this node ({})", self.core.id)));
        }
        if self.http_listen.is_some_and(|http| http == self.listen || Some(http) == self.peer_listen) {
            return Err(ConfigError::Invalid("--http-listen must differ from --listen and --peer-listen".into()));
        }
        if self.peer_listen == Some(self.listen) {
            return Err(ConfigError::Invalid("--peer-listen must differ from --listen".into()));
        }
        let secured =
            self.security.auth.is_some() || self.security.client_tls.is_some() || self.security.peer_tls.is_some();
        if secured && self.peer_listen.is_none() {
            return Err(ConfigError::Invalid(
                "TLS and --auth need --peer-listen: single-port mode is for trials, and a user named by a \
                 forwarding node is believed only on the peer listener"
                    .into(),
            ));
        }
        if self.security.peer_tls.as_ref().is_some_and(|files| files.ca.is_none()) {
            return Err(ConfigError::Invalid(
                "--peer-tls-cert needs --peer-tls-ca: peers must prove who they are".into(),
            ));
        }
        let client_ca = self.security.client_tls.as_ref().and_then(|files| files.ca.as_deref());
        let peer_ca = self.security.peer_tls.as_ref().and_then(|files| files.ca.as_deref());
        if let (Some(client_ca), Some(peer_ca)) = (client_ca, peer_ca) {
            let same = client_ca == peer_ca
                || std::fs::read(client_ca).ok().is_some_and(|bytes| std::fs::read(peer_ca).ok() == Some(bytes));
            if same {
                return Err(ConfigError::Invalid(
                    "--tls-client-ca must differ from --peer-tls-ca: a client's certificate would be accepted \
                     as a node's on the peer listener"
                        .into(),
                ));
            }
        }
        if self.security.limits.max_connections == 0 || self.security.limits.max_streams_per_connection == 0 {
            return Err(ConfigError::Invalid(
                "--max-connections and --max-streams-per-connection must be positive".into(),
            ));
        }
        if self.security.limits.idle_timeout.is_zero() {
            return Err(ConfigError::Invalid("--idle-timeout must be positive".into()));
        }
        if self.statement_timeout.is_zero() {
            return Err(ConfigError::Invalid("--statement-timeout must be positive".into()));
        }
        Ok(())
    }
}

/// A flag value could not be parsed or the settings conflict.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("bad peer list entry {0:?}: expected ID=HOST:PORT")]
    BadPeer(String),
    #[error("bad duration {0:?}: expected e.g. 500ms, 10s, 2m")]
    BadDuration(String),
    #[error("{0}")]
    Invalid(String),
}

/// Parses `1=127.0.0.1:7001,2=127.0.0.1:7002`.
///
/// # Errors
/// An entry without `=`, a non-numeric or zero id, an empty address, or a
/// repeated id.
pub fn parse_peers(text: &str) -> Result<Vec<(NodeId, String)>, ConfigError> {
    let mut peers: Vec<(NodeId, String)> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
        let bad = || ConfigError::BadPeer(entry.to_owned());
        let (id, address) = entry.split_once('=').ok_or_else(bad)?;
        let id: u64 = id.trim().parse().map_err(|_| bad())?;
        let address = address.trim();
        if id == 0 || address.is_empty() || peers.iter().any(|(known, _)| known.0 == id) {
            return Err(bad());
        }
        peers.push((NodeId(id), address.to_owned()));
    }
    Ok(peers)
}

/// Parses a duration such as `250ms`, `10s`, `2m` or a bare number of seconds.
///
/// # Errors
/// Anything else.
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    let text = text.trim();
    let bad = || ConfigError::BadDuration(text.to_owned());
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "" | "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse() {
        let peers = parse_peers("1=127.0.0.1:7001, 2=host:7002").expect("valid");
        assert_eq!(peers, vec![(NodeId(1), "127.0.0.1:7001".into()), (NodeId(2), "host:7002".into())]);
    }

    #[test]
    fn bad_peers_are_refused() {
        for text in ["1", "x=a:1", "0=a:1", "1=", "1=a:1,1=b:2"] {
            assert!(parse_peers(text).is_err(), "{text}");
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn client_and_peer_certificates_come_from_different_authorities() {
        use crate::security::tls::TlsFiles;
        let mut config = ServeConfig::new(NodeId(1), "d".into(), "127.0.0.1:1".parse().expect("addr"));
        config.peer_listen = Some("127.0.0.1:2".parse().expect("addr"));
        let files = |ca: &str| Some(TlsFiles { cert: "c.pem".into(), key: "k.pem".into(), ca: Some(ca.into()) });
        (config.security.client_tls, config.security.peer_tls) = (files("users-ca.pem"), files("nodes-ca.pem"));
        assert!(config.validate().is_ok());
        config.security.client_tls = files("nodes-ca.pem");
        assert!(matches!(config.validate(), Err(ConfigError::Invalid(message)) if message.contains("must differ")));
    }

    #[test]
    fn validate_requires_self_in_peers() {
        let mut config = ServeConfig::new(NodeId(3), "d".into(), "127.0.0.1:1".parse().expect("addr"));
        config.peers = parse_peers("1=a:1,2=b:2").expect("valid");
        assert!(config.validate().is_err());
        config.peers.push((NodeId(3), "c:3".into()));
        assert!(config.validate().is_ok());
        config.join = vec!["a:1".into()];
        assert!(config.validate().is_err());
    }
}
