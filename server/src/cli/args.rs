//! Command-line arguments (clap) and their translation to settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use deeb_core::NodeId;

use super::output::Format;
use super::pod::{self, PodPeers};
use deeb_server::config::{parse_duration, parse_peers, ConfigError, MysqlUrl, ServeConfig};
use deeb_server::scheduled::Store;
use deeb_server::security::tls::TlsFiles;
use deeb_server::security::{ConnectionLimits, SecurityConfig};

/// deeb: a replicated SQL database (raft + SQLite).
#[derive(Debug, Parser)]
#[command(name = "deeb", version)]
pub struct Cli {
    /// Log filter, e.g. `info` or `deeb_server=debug,warn`.
    #[arg(long, global = true, env = "DEEB_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one node.
    Serve(Box<ServeArgs>),
    /// SQL shell: line editing and history on a terminal; with piped
    /// input it runs the statements and stops at the first error (exit 1).
    Shell(ShellArgs),
    /// Execute one write statement (through the leader) and print its
    /// rows affected, last insert id and any rows it returned (RETURNING).
    Exec {
        #[command(flatten)]
        client: ClientArgs,
        /// The SQL to execute.
        sql: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Run one read-only query on this node and print its rows as they
    /// arrive (linearizable by default).
    Query {
        #[command(flatten)]
        client: ClientArgs,
        /// The SQL to run.
        sql: String,
        /// Read consistency.
        #[arg(long, value_enum, default_value_t = Level::Linearizable)]
        consistency: Level,
        /// For stale reads: see every write acknowledged longer ago than this (e.g. 500ms).
        #[arg(long, value_parser = duration_arg)]
        max_staleness: Option<Duration>,
        /// How long the query may run (default: the server's --statement-timeout).
        #[arg(long, value_parser = duration_arg)]
        timeout: Option<Duration>,
        /// Output format; rows are printed as they arrive.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show a node's status and the cluster members.
    Status(ClientArgs),
    /// Change the cluster's membership or leader.
    Nodes {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        action: NodesAction,
    },
    /// Check a node's HTTP health endpoint (plain HTTP, for a container's
    /// HEALTHCHECK: the image has no curl): exit 0 on 200, 1 otherwise.
    Health {
        /// The node's HTTP API address (its --http-listen).
        #[arg(long, env = "DEEB_HTTP_ADDR", default_value = "127.0.0.1:4001")]
        http: String,
        /// Which check: /livez (the node answers) or /readyz (it has a
        /// leader and is caught up).
        #[arg(long, default_value = "/livez")]
        path: String,
    },
    /// Start a local three-node cluster for development.
    Dev(DevArgs),
    /// Measure throughput and latency.
    Bench(BenchArgs),
    /// For `bench/compare.sh`: one SQLite file behind deeb's gRPC API, no
    /// raft (the baseline deeb's reads are measured against).
    #[command(hide = true)]
    BenchBaseline {
        /// The SQLite file (created if missing).
        #[arg(long)]
        file: PathBuf,
        /// The client gRPC address.
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Print every committed row change from any node's log, one JSON line
    /// each (as `GET /api/v1/watch` does), following new writes until
    /// stopped. Resume with `--from` the last index printed.
    Watch {
        #[command(flatten)]
        client: ClientArgs,
        /// The first log index; 0: changes after the node's applied index.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Only these tables (comma-separated); default all.
        #[arg(long, value_delimiter = ',')]
        tables: Vec<String>,
        /// Also print the row before each update and delete.
        #[arg(long)]
        before: bool,
        /// deeb's own lines (as `GET /api/v1/watch`), or Debezium's JSON
        /// envelope.
        #[arg(long, value_enum, default_value_t = WatchFormat::Native)]
        format: WatchFormat,
    },
    /// Copy the whole database, consistently, from any node into a SQLite
    /// file (while writes go on).
    Backup {
        #[command(flatten)]
        client: ClientArgs,
        /// The file to write (first to FILE.partial, renamed once checked).
        #[arg(long)]
        out: PathBuf,
        /// What the file is: the SQLite database, or SQL text (schema and
        /// INSERTs, like sqlite3's `.dump`; no `_deeb_*` tables).
        #[arg(long, value_enum, default_value_t = super::backup::BackupFileFormat::Sqlite)]
        format: super::backup::BackupFileFormat,
        /// Which state the copy holds.
        #[arg(long, value_enum, default_value_t = super::backup::BackupConsistency::Linearizable)]
        consistency: super::backup::BackupConsistency,
        /// Write the file gzip-compressed (`deeb restore` takes it as it is).
        #[arg(long)]
        compress: bool,
    },
    /// Load a backup back. Online through any node (`--addr`): a SQLite file
    /// replaces the whole database, atomically (through the log: every node
    /// installs it at once, or none does); SQL text runs as statements in
    /// requests of bounded size (not atomic: a failure says how far it
    /// got). Offline (`--bootstrap DATA_DIR`): seeds a new node's data
    /// directory with a SQLite file's whole state; run it for every initial
    /// node with the same file and `--peers`, then start them with that
    /// `--peers`.
    Restore {
        #[command(flatten)]
        client: ClientArgs,
        /// The backup: a SQLite file or SQL text.
        file: PathBuf,
        /// Seed this new node's data directory instead of loading online.
        #[arg(long, value_name = "DATA_DIR", requires_all = ["id", "peers"])]
        bootstrap: Option<PathBuf>,
        /// With --bootstrap: the node's id.
        #[arg(long, env = "DEEB_ID", requires = "bootstrap")]
        id: Option<u64>,
        /// With --bootstrap: the new cluster's initial voters, as `deeb serve --peers`.
        #[arg(long, env = "DEEB_PEERS", value_parser = peers_arg, requires = "bootstrap")]
        peers: Option<PeerList>,
        /// Online: load a SQLite file's rows as statements (dumped to SQL
        /// first) into what the database holds, instead of replacing it.
        #[arg(long, conflicts_with = "bootstrap")]
        as_sql: bool,
        /// Online: statements per request (each request is one transaction).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1000))]
        statements_per_request: u64,
    },
    /// Print an argon2 hash of a password (read from the terminal or
    /// stdin) for the users file's `password_hash`; with --token, make a
    /// random bearer token and print it with its `token_hash`.
    Passwd {
        /// Generate a bearer token instead of hashing a password.
        #[arg(long)]
        token: bool,
    },
    /// Make a certificate authority (once) and certificates signed by it:
    /// one per node (serving and connecting, for client and peer TLS) and
    /// one per user who logs in with a client certificate.
    Certs(CertsArgs),
}

/// `deeb certs` flags.
#[derive(Clone, Debug, Args)]
pub struct CertsArgs {
    /// Where the files go: ca.pem and ca-key.pem (made if absent), then
    /// NAME.pem and NAME-key.pem for each certificate.
    #[arg(long, default_value = "./deeb-certs")]
    pub dir: PathBuf,
    /// A node certificate NAME for HOST[,HOST...] (DNS names or IP
    /// addresses other nodes and clients use to reach it), e.g.
    /// `--node node1=db1.example,10.0.0.1`. Repeatable.
    #[arg(long = "node", value_name = "NAME=HOSTS")]
    pub nodes: Vec<String>,
    /// A client certificate whose common name is USER. Repeatable.
    #[arg(long = "user", value_name = "USER")]
    pub users: Vec<String>,
}

/// Where a client command connects, and as whom.
#[derive(Clone, Debug, Args)]
pub struct ClientArgs {
    /// Any node's address (writes go on to the leader, found through it).
    #[arg(long, env = "DEEB_ADDR", default_value = "127.0.0.1:7001")]
    pub addr: String,
    /// Connect with TLS, trusting the CA certificate in this PEM file.
    #[arg(long, env = "DEEB_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate to present (PEM; with --tls-key).
    #[arg(long, env = "DEEB_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "DEEB_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// User name (the nodes' --auth users file).
    #[arg(long, env = "DEEB_USER")]
    pub user: Option<String>,
    /// Password for --user (better in DEEB_PASSWORD than on the command
    /// line, where other local users can see it).
    #[arg(long, env = "DEEB_PASSWORD", hide_env_values = true, value_parser = secret_arg)]
    pub password: Option<Secret>,
}

/// `deeb shell` flags.
#[derive(Clone, Debug, Args)]
pub struct ShellArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// With piped input, go on after a failing statement (exit 1 at the end).
    #[arg(long)]
    pub keep_going: bool,
    /// Output format to start with (`.mode` changes it).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `deeb nodes ...`
#[derive(Debug, Subcommand)]
pub enum NodesAction {
    /// Add a node (as a voter unless --learner).
    Add {
        id: u64,
        /// The new node's peer address (its --peer-advertise).
        address: String,
        #[arg(long)]
        learner: bool,
    },
    /// Remove a node.
    Remove { id: u64 },
    /// Transfer leadership to a node.
    Transfer { id: u64 },
}

/// Read consistency levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Level {
    Linearizable,
    Lease,
    Stale,
}

/// `deeb serve` flags; each also reads a `DEEB_*` environment variable.
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// This node's id (non-zero, never reused for a wiped disk).
    #[arg(long, env = "DEEB_ID", required_unless_present = "id_from_hostname")]
    pub id: Option<u64>,
    /// Take the id from the host name's trailing ordinal, as a StatefulSet
    /// names its pods: `deeb-0` is node 1, `deeb-4` node 5.
    #[arg(long, env = "DEEB_ID_FROM_HOSTNAME", conflicts_with = "id")]
    pub id_from_hostname: bool,
    /// Data directory (log, database, snapshots).
    #[arg(long, env = "DEEB_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address of the client gRPC server (and of the peer service too when
    /// --peer-listen is not given: single-port mode, for tests and trials).
    #[arg(long, env = "DEEB_LISTEN", default_value = "127.0.0.1:7001")]
    pub listen: SocketAddr,
    /// Address of the HTTP API (rqlite's /db/execute, /db/query,
    /// /db/request, /status, /readyz, /livez), or `off`.
    #[arg(long, env = "DEEB_HTTP_LISTEN", default_value = "127.0.0.1:4001", value_parser = http_listen_arg)]
    pub http_listen: HttpListen,
    /// Address of the peer listener: raft messages, snapshots and requests
    /// forwarded between nodes. Clients are never served the peer service.
    #[arg(long, env = "DEEB_PEER_LISTEN")]
    pub peer_listen: Option<SocketAddr>,
    /// Address other nodes use to reach this one, the one its member record
    /// holds (default: --peer-listen, or --listen in single-port mode).
    #[arg(long, visible_alias = "advertise", env = "DEEB_PEER_ADVERTISE")]
    pub peer_advertise: Option<String>,
    /// Address clients use to reach this node's client listener (default:
    /// --listen); status on every node names it, so clients find the leader.
    #[arg(long, env = "DEEB_CLIENT_ADVERTISE")]
    pub client_advertise: Option<String>,
    /// Address clients use to reach this node's HTTP API (default:
    /// --http-listen); /leader, /nodes and ?redirect on every node name it.
    #[arg(long, env = "DEEB_HTTP_ADVERTISE")]
    pub http_advertise: Option<String>,
    /// Serve the peer service on an address outside 127.0.0.0/8 without
    /// peer TLS, so that nothing authenticates peers: only on a network
    /// where everyone who can reach that port is trusted.
    #[arg(long, env = "DEEB_INSECURE_PEERS")]
    pub insecure_peers: bool,
    /// Serve clients over TLS with this certificate chain (PEM).
    #[arg(long, env = "DEEB_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "DEEB_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require clients to present a certificate signed by this CA (PEM);
    /// its common name may name the user.
    #[arg(long, env = "DEEB_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// This node's certificate (PEM) for mutual TLS with other nodes, on
    /// the peer listener and on its calls to them; it must name the host of
    /// --peer-advertise.
    #[arg(long, env = "DEEB_PEER_TLS_CERT", requires_all = ["peer_tls_key", "peer_tls_ca"])]
    pub peer_tls_cert: Option<PathBuf>,
    /// The private key of --peer-tls-cert (PEM).
    #[arg(long, env = "DEEB_PEER_TLS_KEY", requires = "peer_tls_cert")]
    pub peer_tls_key: Option<PathBuf>,
    /// The CA (PEM) every node's peer certificate chains to.
    #[arg(long, env = "DEEB_PEER_TLS_CA", requires = "peer_tls_cert")]
    pub peer_tls_ca: Option<PathBuf>,
    /// Users file (JSON: user names, argon2 password hashes from `deeb
    /// passwd`, permissions). Without it every client may do everything.
    #[arg(long, env = "DEEB_AUTH")]
    pub auth: Option<PathBuf>,
    /// Connections served at once on each listener; more are refused.
    #[arg(long, env = "DEEB_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Calls (HTTP/2 streams) in flight on one connection.
    #[arg(long, env = "DEEB_MAX_STREAMS_PER_CONNECTION", default_value_t = 256)]
    pub max_streams_per_connection: u32,
    /// A connection that sends nothing for this long is closed (clients
    /// answer the node's keep-alive pings, so a live one stays).
    #[arg(long, env = "DEEB_IDLE_TIMEOUT", value_parser = duration_arg, default_value = "60s")]
    pub idle_timeout: Duration,
    /// Initial voters of a new cluster, this node included: `1=HOST:PORT,2=...`.
    #[arg(long, env = "DEEB_PEERS", value_parser = peers_arg)]
    pub peers: Option<PeerList>,
    /// Mixed into a new cluster's id with --peers, so two clusters founded
    /// with the same peer list refuse each other's nodes. Give every
    /// founding node the same one.
    #[arg(long, env = "DEEB_CLUSTER_TOKEN", default_value = "")]
    pub cluster_token: String,
    /// Join an existing cluster through a member's peer address (its
    /// --peer-advertise); several, comma-separated, are tried in turn.
    #[arg(long, env = "DEEB_JOIN", conflicts_with = "peers")]
    pub join: Option<String>,
    /// A StatefulSet's pods as peers, from its headless service's DNS
    /// names: `NAME.SERVICE.NAMESPACE.svc.cluster.local:PORT,replicas=N`.
    /// Pods `NAME-0` .. `NAME-(N-1)` found the cluster (N is fixed at
    /// install: never change it); a pod with a higher ordinal joins it
    /// through them (as a learner, promoted once caught up). The defaults
    /// of --peer-advertise, --client-advertise and --http-advertise become
    /// this pod's DNS name. A restarted pod finds its data and restarts.
    #[arg(long, env = "DEEB_PEERS_FROM_DNS", value_parser = pod_peers_arg, conflicts_with_all = ["peers", "join"])]
    pub peers_from_dns: Option<PodPeers>,
    /// When joining, stay a non-voting learner.
    #[arg(long, env = "DEEB_LEARNER")]
    pub learner: bool,
    /// Take a snapshot every this many applied entries (default 10000).
    #[arg(long, env = "DEEB_SNAPSHOT_INTERVAL")]
    pub snapshot_interval: Option<u64>,
    /// Entries the log keeps below the applied index when it is compacted,
    /// so a follower briefly behind catches up from the log instead of by
    /// a snapshot (default 1000).
    #[arg(long, env = "DEEB_COMPACTION_LAG")]
    pub compaction_lag: Option<u64>,
    /// Batches the leader keeps proposed and not yet committed: the next
    /// executes while earlier ones replicate (1: one at a time; the MySQL
    /// backend runs one at a time).
    #[arg(long, env = "DEEB_BATCHES_IN_FLIGHT", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub batches_in_flight: u64,
    /// Milliseconds per raft tick.
    #[arg(long, env = "DEEB_TICK_MS")]
    pub tick_ms: Option<u64>,
    /// Bound on a client request inside the server.
    #[arg(long, env = "DEEB_REQUEST_TIMEOUT", value_parser = duration_arg, default_value = "10s")]
    pub request_timeout: Duration,
    /// How long one statement may run: a query unless it asks otherwise,
    /// and a write (writes run off the event loop, so this may exceed the
    /// election timeout).
    #[arg(long, env = "DEEB_STATEMENT_TIMEOUT", value_parser = duration_arg, default_value = "5s")]
    pub statement_timeout: Duration,
    /// The longest a query may ask to run.
    #[arg(long, env = "DEEB_STATEMENT_TIMEOUT_MAX", value_parser = duration_arg, default_value = "60s")]
    pub statement_timeout_max: Duration,
    /// Take a backup every this long (at least 1s; e.g. 1h), on whichever
    /// node leads, into --backup-dir or --backup-url; skipped when nothing
    /// changed.
    #[arg(long, env = "DEEB_BACKUP_INTERVAL", value_parser = duration_arg, requires = "backup_to")]
    pub backup_interval: Option<Duration>,
    /// Where scheduled backups go, with their manifest.json: give every
    /// node the same directory on storage they share, or each its own.
    #[arg(long, env = "DEEB_BACKUP_DIR", requires = "backup_interval", group = "backup_to")]
    pub backup_dir: Option<PathBuf>,
    /// Or an S3-compatible object store, `s3://BUCKET/PREFIX`, configured
    /// from the AWS_* environment variables (AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION; AWS_ENDPOINT_URL and
    /// AWS_ALLOW_HTTP=true for a server other than AWS's).
    #[arg(long, env = "DEEB_BACKUP_URL", requires = "backup_interval", group = "backup_to")]
    pub backup_url: Option<String>,
    /// How many scheduled backups to keep (the oldest go first).
    #[arg(long, env = "DEEB_BACKUP_KEEP", default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..))]
    pub backup_keep: u64,
    /// Where the node keeps its data: `sqlite` (a file in --data-dir) or
    /// `mysql` (its own MySQL or MariaDB server, --mysql-url). The raft log
    /// stays in --data-dir either way.
    #[arg(long, env = "DEEB_BACKEND", value_enum, default_value = "sqlite")]
    pub backend: BackendKind,
    /// With --backend mysql: the node's server and database,
    /// mysql://USER:PASSWORD@HOST:PORT/DATABASE (never logged).
    #[arg(long, env = "DEEB_MYSQL_URL", hide_env_values = true, value_parser = secret_arg)]
    pub mysql_url: Option<Secret>,
    /// Or a file holding that URL (a mounted secret), read at start.
    #[arg(long, env = "DEEB_MYSQL_URL_FILE", conflicts_with = "mysql_url")]
    pub mysql_url_file: Option<PathBuf>,
}

/// Where a node keeps its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// SQLite, in the data directory.
    Sqlite,
    /// The node's own MySQL or MariaDB server.
    Mysql,
}

/// How `deeb watch` prints a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WatchFormat {
    /// deeb's `Change`, as `GET /api/v1/watch` sends it.
    Native,
    /// Debezium's JSON envelope (before, after, source, op, ts_ms).
    Debezium,
}

/// `deeb dev` flags.
#[derive(Clone, Debug, Args)]
pub struct DevArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Data directory for all nodes.
    #[arg(long, default_value = "./deeb-dev-data")]
    pub dir: PathBuf,
    /// Client port of node 1; node N listens for clients on base-port + N - 1
    /// and for peers on base-port + 100 + N - 1.
    #[arg(long, default_value_t = 7001)]
    pub base_port: u16,
    /// Secure the cluster: certificates from a new CA (client TLS and peer
    /// mutual TLS) and a users file with an `admin` user, all under --dir;
    /// prints how to connect.
    #[arg(long)]
    pub secure: bool,
    /// `mysql`: each node keeps its data in a MariaDB server of its own,
    /// started here (data under --dir, port base-port + 300 + N - 1, needs
    /// `apt-get install mariadb-server`) and stopped with the cluster.
    #[arg(long, value_enum, default_value = "sqlite")]
    pub backend: BackendKind,
}

/// `deeb bench` flags.
#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    /// `--addr` may list several nodes, comma-separated; with one deeb
    /// node, the clients spread over every member of its cluster.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Concurrent clients, each with a connection of its own.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// How long to measure, e.g. 10s (after the warm-up).
    #[arg(long, value_parser = duration_arg, default_value = "10s")]
    pub duration: Duration,
    /// How long to run before measuring.
    #[arg(long, value_parser = duration_arg, default_value = "2s")]
    pub warmup: Duration,
    /// What each client does.
    #[arg(long, value_enum, default_value_t = BenchMode::Write)]
    pub mode: BenchMode,
    /// The reads' consistency.
    #[arg(long, value_enum, default_value_t = BenchConsistency::Linearizable)]
    pub consistency: BenchConsistency,
    /// With --mode mixed: the share of writes, in percent.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub write_percent: u8,
    /// Bytes in each written value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Distinct keys written and read (chosen at random).
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Connect to the given node only, not to every member.
    #[arg(long)]
    pub one_node: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// The system under test: deeb, or an etcd cluster (`--addr` lists
    /// its members' client URLs) for comparison.
    #[arg(long, value_enum, default_value_t = BenchTarget::Deeb)]
    pub target: BenchTarget,
}

/// What `deeb bench` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchMode {
    /// Upserts of one key each.
    Write,
    /// Point reads.
    Read,
    /// Writes and reads, --write-percent of them writes.
    Mixed,
}

/// The consistency of `deeb bench`'s reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchConsistency {
    Linearizable,
    Lease,
    Stale,
}

/// The system `deeb bench` drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchTarget {
    Deeb,
    Etcd,
}

impl ServeArgs {
    /// The node settings these flags describe.
    ///
    /// # Errors
    /// Conflicting or invalid settings.
    pub fn to_config(&self) -> Result<ServeConfig, ConfigError> {
        self.to_config_on(pod::hostname)
    }

    /// [`Self::to_config`] on a host named by `hostname` (read only for
    /// --id-from-hostname).
    fn to_config_on(&self, hostname: impl FnOnce() -> Result<String, ConfigError>) -> Result<ServeConfig, ConfigError> {
        let id = self.node_id(hostname)?;
        let mut config = ServeConfig::new(id, self.data_dir.clone(), self.listen);
        config.peer_listen = self.peer_listen;
        config.http_listen = self.http_listen.0;
        let peer_listen = self.peer_listen.unwrap_or(self.listen);
        // What this node's addresses default to: its pod's DNS name, or
        // the addresses it listens on.
        let pod_host = self.peers_from_dns.as_ref().map(|pods| pods.host(id.0 - 1));
        let default_address = |listen: SocketAddr| match &pod_host {
            Some(host) => format!("{host}:{}", listen.port()),
            None => listen.to_string(),
        };
        config.advertise = self.peer_advertise.clone().unwrap_or_else(|| default_address(peer_listen));
        config.client_advertise = self.client_advertise.clone().unwrap_or_else(|| default_address(self.listen));
        config.http_advertise = match (&self.http_advertise, self.http_listen.0) {
            (_, None) => String::new(),
            (Some(advertise), Some(_)) => advertise.clone(),
            (None, Some(listen)) => default_address(listen),
        };
        config.security = self.security_config();
        if !peer_listen.ip().is_loopback() && config.security.peer_tls.is_none() && !self.insecure_peers {
            return Err(ConfigError::Invalid(format!(
                "the peer service would listen on {peer_listen}, reachable from the network, without peer TLS: \
                 anyone reaching it could send raft messages or replace the database. Give --peer-tls-cert, \
                 --peer-tls-key and --peer-tls-ca, listen on 127.0.0.0/8, or pass --insecure-peers on a \
                 network you trust"
            )));
        }
        if config.security.auth.is_some() && config.security.peer_tls.is_none() && !self.insecure_peers {
            return Err(ConfigError::Invalid(
                "--auth needs peer TLS (--peer-tls-cert, --peer-tls-key, --peer-tls-ca): whoever reaches the peer \
                 listener could name any user. Pass --insecure-peers to run so anyway"
                    .into(),
            ));
        }
        if self.insecure_peers {
            tracing::warn!(peer_listen = %peer_listen, "--insecure-peers: nothing authenticates the peer service");
        }
        config.peers = self.peers.clone().map(|list| list.0).unwrap_or_default();
        config.cluster_token = self.cluster_token.clone();
        config.join = (self.join.iter().flat_map(|list| list.split(',')))
            .map(str::trim)
            .filter(|address| !address.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(pods) = &self.peers_from_dns {
            let ordinal = id.0 - 1;
            match pods.founds(ordinal) {
                true => config.peers = pods.founders(),
                false => config.join = pods.founders().into_iter().map(|(_, address)| address).collect(),
            }
        }
        config.join_as_learner = self.learner;
        config.request_timeout = self.request_timeout;
        config.statement_timeout = self.statement_timeout;
        config.statement_timeout_max = self.statement_timeout_max.max(self.statement_timeout);
        let core = &mut config.core;
        core.limits.write_statement_timeout = self.statement_timeout;
        core.snapshot_interval_entries = self.snapshot_interval.unwrap_or(core.snapshot_interval_entries);
        core.compaction_lag_entries = self.compaction_lag.unwrap_or(core.compaction_lag_entries);
        core.tick_ms = self.tick_ms.unwrap_or(core.tick_ms);
        core.limits.batches_in_flight_max = self.batches_in_flight as usize;
        config.backups = match (self.backup_interval, &self.backup_dir, &self.backup_url) {
            (Some(interval), Some(dir), _) => Some((interval, Store::Dir(dir.clone()))),
            #[cfg(not(madsim))]
            (Some(interval), None, Some(url)) => Some((interval, Store::objects(url).map_err(ConfigError::Invalid)?)),
            _ => None,
        }
        .map(|(interval, to)| deeb_server::scheduled::Schedule {
            interval,
            to,
            keep: self.backup_keep as usize,
        });
        config.mysql_url = self.mysql_url()?;
        config.validate()?;
        Ok(config)
    }

    /// The MySQL URL of `--backend mysql`, from --mysql-url or its file.
    fn mysql_url(&self) -> Result<Option<MysqlUrl>, ConfigError> {
        let given = self.mysql_url.is_some() || self.mysql_url_file.is_some();
        match self.backend {
            BackendKind::Sqlite if given => {
                Err(ConfigError::Invalid("--mysql-url needs --backend mysql (the default is sqlite)".into()))
            }
            BackendKind::Sqlite => Ok(None),
            BackendKind::Mysql if self.backup_interval.is_some() => Err(ConfigError::Invalid(
                "scheduled backups copy the SQLite file: with --backend mysql back up each node's MySQL server \
                 (mariadb-dump --single-transaction, mariadb-backup)"
                    .into(),
            )),
            BackendKind::Mysql => {
                let url = match (&self.mysql_url, &self.mysql_url_file) {
                    (Some(url), _) => url.0.clone(),
                    (None, Some(file)) => std::fs::read_to_string(file)
                        .map_err(|error| ConfigError::Invalid(format!("--mysql-url-file {}: {error}", file.display())))?
                        .trim()
                        .to_owned(),
                    (None, None) => {
                        return Err(ConfigError::Invalid(
                            "--backend mysql needs --mysql-url mysql://USER:PASSWORD@HOST:PORT/DATABASE".into(),
                        ))
                    }
                };
                if !url.starts_with("mysql://") {
                    return Err(ConfigError::Invalid("--mysql-url must start with mysql://".into()));
                }
                Ok(Some(MysqlUrl(url)))
            }
        }
    }

    /// `--id`, or the ordinal in the host name (which must then be the
    /// StatefulSet's of --peers-from-dns).
    fn node_id(&self, hostname: impl FnOnce() -> Result<String, ConfigError>) -> Result<NodeId, ConfigError> {
        if let Some(id) = self.id {
            return match id {
                0 => Err(ConfigError::Invalid("--id must be non-zero".into())),
                id => Ok(NodeId(id)),
            };
        }
        let hostname = hostname()?;
        let (name, ordinal) = pod::ordinal(&hostname)?;
        if let Some(pods) = self.peers_from_dns.as_ref().filter(|pods| pods.name() != name) {
            return Err(ConfigError::Invalid(format!(
                "the host name {hostname:?} is not a pod of {:?}, the StatefulSet --peers-from-dns names",
                pods.name()
            )));
        }
        Ok(pod::node_id(ordinal))
    }

    fn security_config(&self) -> SecurityConfig {
        let files = |cert: &Option<PathBuf>, key: &Option<PathBuf>, ca: &Option<PathBuf>| {
            let (cert, key) = (cert.clone()?, key.clone()?);
            Some(TlsFiles { cert, key, ca: ca.clone() })
        };
        SecurityConfig {
            client_tls: files(&self.tls_cert, &self.tls_key, &self.tls_client_ca),
            peer_tls: files(&self.peer_tls_cert, &self.peer_tls_key, &self.peer_tls_ca),
            auth: self.auth.clone(),
            limits: ConnectionLimits {
                max_connections: self.max_connections,
                max_streams_per_connection: self.max_streams_per_connection,
                idle_timeout: self.idle_timeout,
            },
        }
    }
}

/// The parsed `--peers` list (a newtype so clap takes it as one value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerList(pub Vec<(NodeId, String)>);

fn pod_peers_arg(text: &str) -> Result<PodPeers, ConfigError> {
    PodPeers::parse(text)
}

fn peers_arg(text: &str) -> Result<PeerList, ConfigError> {
    parse_peers(text).map(PeerList)
}

/// `--http-listen`: an address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpListen(pub Option<SocketAddr>);

fn http_listen_arg(text: &str) -> Result<HttpListen, String> {
    if text == "off" {
        return Ok(HttpListen(None));
    }
    text.parse().map(|address| HttpListen(Some(address))).map_err(|_| format!("{text:?}: expected HOST:PORT or off"))
}

/// A password: shown as `<hidden>` by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "<hidden>")
    }
}

fn secret_arg(text: &str) -> Result<Secret, ConfigError> {
    Ok(Secret(text.to_owned()))
}

fn duration_arg(text: &str) -> Result<Duration, ConfigError> {
    parse_duration(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("deeb").chain(args.iter().copied()))
    }

    #[test]
    fn serve_flags_become_a_config() {
        let cli = parse(&[
            "serve",
            "--id",
            "2",
            "--data-dir",
            "/tmp/x",
            "--listen",
            "127.0.0.1:7002",
            "--peers",
            "1=127.0.0.1:7001,2=127.0.0.1:7002",
            "--snapshot-interval",
            "20",
            "--compaction-lag",
            "7",
        ])
        .expect("parses");
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        let config = args.to_config().expect("valid");
        assert_eq!(config.id(), NodeId(2));
        assert_eq!(config.peers.len(), 2);
        assert_eq!(config.advertise, "127.0.0.1:7002");
        assert_eq!(config.core.snapshot_interval_entries, 20);
        assert_eq!(config.core.compaction_lag_entries, 7);
    }

    fn serve_config(extra: &[&str]) -> Result<ServeConfig, ConfigError> {
        let mut args = vec!["serve", "--id", "1", "--data-dir", "d"];
        args.extend_from_slice(extra);
        let Command::Serve(args) = parse(&args).expect("parses").command else { panic!("not serve") };
        args.to_config()
    }

    #[test]
    fn the_peer_listener_is_separate_and_advertised() {
        let config = serve_config(&["--listen", "127.0.0.1:7001", "--peer-listen", "127.0.0.1:7101"]).expect("ok");
        assert_eq!(config.peer_listen, Some("127.0.0.1:7101".parse().expect("address")));
        assert_eq!(config.advertise, "127.0.0.1:7101");
        let config = serve_config(&["--peer-listen", "127.0.0.1:7101", "--advertise", "db1:7101"]).expect("ok");
        assert_eq!(config.advertise, "db1:7101");
        let same = serve_config(&["--listen", "127.0.0.1:7001", "--peer-listen", "127.0.0.1:7001"]);
        assert!(matches!(same, Err(ConfigError::Invalid(message)) if message.contains("must differ")));
    }

    #[test]
    fn an_unauthenticated_peer_service_off_loopback_needs_insecure_peers() {
        let exposed = serve_config(&["--listen", "0.0.0.0:7001"]);
        assert!(matches!(exposed, Err(ConfigError::Invalid(message)) if message.contains("--insecure-peers")));
        let exposed = serve_config(&["--peer-listen", "10.1.2.3:7101"]);
        assert!(matches!(exposed, Err(ConfigError::Invalid(message)) if message.contains("10.1.2.3:7101")));
        // Clients on the network, peers on loopback: nothing to accept.
        serve_config(&["--listen", "0.0.0.0:7001", "--peer-listen", "127.0.0.1:7101"]).expect("ok");
        serve_config(&["--peer-listen", "10.1.2.3:7101", "--insecure-peers"]).expect("accepted when asked");
    }

    #[test]
    fn peers_and_join_conflict() {
        let result = parse(&["serve", "--id", "1", "--data-dir", "d", "--peers", "1=a:1", "--join", "a:1"]);
        assert!(result.is_err());
    }

    /// `serve` flags for a StatefulSet pod named `host`.
    fn pod_config(host: &str, extra: &[&str]) -> Result<ServeConfig, ConfigError> {
        let mut args = vec!["serve", "--id-from-hostname", "--data-dir", "d", "--listen", "0.0.0.0:7001"];
        args.extend_from_slice(&["--peer-listen", "0.0.0.0:7100", "--http-listen", "0.0.0.0:4001"]);
        args.extend_from_slice(&["--insecure-peers", "--peers-from-dns", "deeb.deeb-peers.db.svc:7100,replicas=3"]);
        args.extend_from_slice(extra);
        let Command::Serve(args) = parse(&args).expect("parses").command else { panic!("not serve") };
        args.to_config_on(|| Ok(host.to_owned()))
    }

    #[test]
    fn a_founding_pod_takes_its_id_and_peers_from_its_name() {
        let config = pod_config("deeb-1", &[]).expect("valid");
        assert_eq!(config.id(), NodeId(2));
        let names: Vec<_> = config.peers.iter().map(|(id, address)| format!("{}={address}", id.0)).collect();
        assert_eq!(
            names,
            ["1=deeb-0.deeb-peers.db.svc:7100", "2=deeb-1.deeb-peers.db.svc:7100", "3=deeb-2.deeb-peers.db.svc:7100"]
        );
        assert!(config.join.is_empty());
        assert_eq!(config.advertise, "deeb-1.deeb-peers.db.svc:7100");
        assert_eq!(config.client_advertise, "deeb-1.deeb-peers.db.svc:7001");
        assert_eq!(config.http_advertise, "deeb-1.deeb-peers.db.svc:4001");
        let advertised = pod_config("deeb-1", &["--client-advertise", "db.example:7001"]).expect("valid");
        assert_eq!(advertised.client_advertise, "db.example:7001");
    }

    #[test]
    fn a_pod_past_the_founders_joins_through_them() {
        let config = pod_config("deeb-3", &[]).expect("valid");
        assert_eq!(config.id(), NodeId(4));
        assert!(config.peers.is_empty());
        assert_eq!(config.join.len(), 3);
        assert_eq!(config.join[2], "deeb-2.deeb-peers.db.svc:7100");
        assert_eq!(config.advertise, "deeb-3.deeb-peers.db.svc:7100");
    }

    #[test]
    fn a_host_name_that_is_not_the_statefulsets_pod_is_refused() {
        let other = pod_config("other-0", &[]);
        assert!(matches!(other, Err(ConfigError::Invalid(message)) if message.contains("not a pod of")));
        assert!(pod_config("deeb", &[]).is_err());
        let both = parse(&["serve", "--id", "1", "--id-from-hostname", "--data-dir", "d"]);
        assert!(both.is_err(), "--id and --id-from-hostname conflict");
        assert!(parse(&["serve", "--data-dir", "d"]).is_err(), "an id is required");
    }

    #[test]
    fn join_takes_several_members() {
        let config = serve_config(&["--join", "a:1, b:2,"]).expect("valid");
        assert_eq!(config.join, ["a:1", "b:2"]);
    }

    #[test]
    fn client_commands_parse() {
        let cli = parse(&["query", "SELECT 1", "--consistency", "stale", "--max-staleness", "500ms"]).expect("ok");
        let Command::Query { client, consistency, max_staleness, .. } = cli.command else { panic!("not query") };
        assert_eq!(client.addr, "127.0.0.1:7001");
        assert_eq!(consistency, Level::Stale);
        assert_eq!(max_staleness, Some(Duration::from_millis(500)));
        let cli = parse(&["nodes", "--addr", "h:1", "add", "4", "127.0.0.1:7004", "--learner"]).expect("ok");
        assert!(matches!(cli.command, Command::Nodes { action: NodesAction::Add { id: 4, learner: true, .. }, .. }));
        let cli = parse(&["bench", "--clients", "8", "--duration", "2s", "--mode", "read"]).expect("ok");
        assert!(matches!(cli.command, Command::Bench(BenchArgs { clients: 8, mode: BenchMode::Read, .. })));
    }
}
