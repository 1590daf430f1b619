//! `deeb dev`: a local cluster of `deeb serve` child processes.

use std::path::{Path, PathBuf};

use deeb_server::security::certs::write_pem;
use deeb_server::security::users::hash_secret;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use deeb_server::backend::mysql::local::{die_with_parent, LocalServer};

use super::args::{BackendKind, DevArgs};
use super::commands;

/// Child processes killed when dropped (also on panic or early return).
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.start_kill();
        }
    }
}

/// Starts the cluster, waits for a leader, and runs until Ctrl-C.
///
/// # Errors
/// A node could not be started, or no leader appeared in time.
pub async fn run(args: &DevArgs, log_level: &str) -> Result<(), String> {
    if args.nodes == 0 || args.nodes > 9 {
        return Err("--nodes must be between 1 and 9".into());
    }
    let port = |offset: u64| {
        u16::try_from(u64::from(args.base_port) + offset)
            .map_err(|_| format!("--base-port {} leaves no room for {} nodes' ports", args.base_port, args.nodes))
    };
    let mut addresses = Vec::new();
    let mut peer_addresses = Vec::new();
    let mut http_addresses = Vec::new();
    for index in 0..args.nodes {
        addresses.push(format!("127.0.0.1:{}", port(index)?));
        peer_addresses.push(format!("127.0.0.1:{}", port(PEER_PORT_OFFSET + index)?));
        let http = u64::from(args.base_port).checked_sub(HTTP_PORT_BELOW).map(|base| base + index);
        let http = http.and_then(|port| u16::try_from(port).ok()).filter(|port| *port > 0);
        let http = http.ok_or_else(|| format!("--base-port {} leaves no room for HTTP ports", args.base_port))?;
        http_addresses.push(format!("127.0.0.1:{http}"));
    }
    let peers: Vec<String> =
        peer_addresses.iter().enumerate().map(|(index, address)| format!("{}={address}", index + 1)).collect();
    let secured = if args.secure { Some(Secured::prepare(&args.dir, args.nodes)?) } else { None };
    // Stopped after the nodes (dropped after `children`).
    let mut mariadb = Vec::new();
    if args.backend == BackendKind::Mysql {
        for index in 0..args.nodes {
            let dir = args.dir.join(format!("mariadb-{}", index + 1));
            let server = LocalServer::start(&dir, port(MYSQL_PORT_OFFSET + index)?)?;
            let url_file = dir.join("url");
            write_secret(&url_file, &server.url())?;
            println!("node {}: MariaDB on 127.0.0.1:{} (data in {})", index + 1, server.port(), dir.display());
            mariadb.push((server, url_file));
        }
    }
    let mut children = Children(Vec::new());
    let mut started = Vec::new();
    for (index, (address, peer_address)) in addresses.iter().zip(&peer_addresses).enumerate() {
        let id = index as u64 + 1;
        let listeners = Listeners { client: address, peer: peer_address, http: &http_addresses[index] };
        let mut extra = secured.as_ref().map(|secured| secured.node_flags(id)).unwrap_or_default();
        if let Some((_, url_file)) = mariadb.get(index) {
            let url_file = url_file.to_string_lossy().into_owned();
            extra.extend(["--backend".to_owned(), "mysql".to_owned(), "--mysql-url-file".to_owned(), url_file]);
        }
        let (child, command_line) = spawn_node(id, listeners, &peers.join(","), (&args.dir, &extra), log_level)?;
        started.push(format!("node {id}: pid {}: {command_line}", child.id().unwrap_or(0)));
        children.0.push(child);
    }
    let mut options = deeb_client::Options::default();
    if let Some(secured) = &secured {
        let tls = deeb_server::security::tls::channel_config(Some(&secured.ca), None);
        options.tls = Some(tls.map_err(|error| error.to_string())?);
    }
    let client = commands::Client::new(&[addresses[0].as_str()], options);
    let leader = wait_for_leader(&client, Duration::from_secs(20)).await?;
    println!(
        "deeb dev cluster: {} nodes, clients on {} (peers on {}, HTTP on {}); leader is node {leader}",
        args.nodes,
        addresses.join(", "),
        peer_addresses.join(", "),
        http_addresses.join(", ")
    );
    // A person needs these to kill a node and start it again.
    for line in &started {
        println!("{line}");
    }
    println!("data under {}, logs in node-N.log there", args.dir.display());
    match &secured {
        None => println!("connect with: deeb shell --addr {}", addresses[0]),
        Some(secured) => {
            println!("TLS for clients and between nodes, users in {}", secured.users.display());
            println!(
                "connect with: DEEB_PASSWORD=\"$(cat {})\" deeb shell --addr {} --tls-ca {} --user admin",
                secured.password_file.display(),
                addresses[0],
                secured.ca.display()
            );
        }
    }
    println!("press Ctrl-C to stop");
    super::shutdown_signal().await;
    println!("stopping");
    drop(children);
    drop(mariadb);
    Ok(())
}

/// Writes `text` to a file only its owner reads.
fn write_secret(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| format!("{}: {error}", path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(|error| format!("{}: {error}", path.display()))
}

/// Node N's peer listener is on base-port + this + N - 1.
const PEER_PORT_OFFSET: u64 = 100;
/// Node N's MariaDB server (`--backend mysql`) is on base-port + this + N - 1.
const MYSQL_PORT_OFFSET: u64 = 300;
/// Node N's HTTP API is on base-port - this + N - 1 (4001 for node 1, as
/// rqlite's).
const HTTP_PORT_BELOW: u64 = 3000;

/// A node's two listeners.
struct Listeners<'a> {
    client: &'a str,
    peer: &'a str,
    http: &'a str,
}

/// Starts node `id`; returns it and its command line, as a shell would take it.
fn spawn_node(
    id: u64,
    listeners: Listeners<'_>,
    peers: &str,
    (dir, extra): (&Path, &[String]),
    log_level: &str,
) -> Result<(Child, String), String> {
    let exe = std::env::current_exe().map_err(|error| format!("cannot find own executable: {error}"))?;
    let data_dir = dir.join(format!("node-{id}"));
    std::fs::create_dir_all(&data_dir).map_err(|error| format!("{}: {error}", data_dir.display()))?;
    let log = std::fs::File::create(dir.join(format!("node-{id}.log"))).map_err(|error| error.to_string())?;
    let id_text = id.to_string();
    let data_dir_text = data_dir.to_string_lossy();
    let mut args = vec![
        "serve",
        "--id",
        &id_text,
        "--listen",
        listeners.client,
        "--peer-listen",
        listeners.peer,
        "--http-listen",
        listeners.http,
        "--peers",
        peers,
        "--log-level",
        log_level,
        "--data-dir",
        &data_dir_text,
    ];
    args.extend(extra.iter().map(String::as_str));
    let command_line = std::iter::once(exe.to_string_lossy().as_ref())
        .chain(args.iter().copied())
        .map(shell_quote)
        .collect::<Vec<_>>()
        .join(" ");
    let mut command = Command::new(&exe);
    // The node gets SIGKILL when `deeb dev` dies, however it dies.
    die_with_parent(command.as_std_mut());
    let child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("starting node {id}: {error}"))?;
    Ok((child, command_line))
}

/// The files of a secured dev cluster.
struct Secured {
    certs: PathBuf,
    ca: PathBuf,
    users: PathBuf,
    password_file: PathBuf,
}

impl Secured {
    /// Makes (or reuses) the CA, a certificate per node for 127.0.0.1 and
    /// localhost, and a users file: `admin` (all permissions, its password
    /// in `admin-password`) and anonymous status and readiness.
    fn prepare(dir: &Path, nodes: u64) -> Result<Secured, String> {
        let certs = dir.join("certs");
        let (ca, _) = super::secrets::authority(&certs, "ca", "deeb dev nodes CA")?;
        let hosts = ["127.0.0.1".to_owned(), "localhost".to_owned()];
        for id in 1..=nodes {
            let issued = ca.issue(&format!("node-{id}"), &hosts).map_err(|error| error.to_string())?;
            let (cert, key) = (certs.join(format!("node-{id}.pem")), certs.join(format!("node-{id}-key.pem")));
            write_pem(&cert, &issued.cert_pem, false).map_err(|error| format!("{}: {error}", cert.display()))?;
            write_pem(&key, &issued.key_pem, true).map_err(|error| format!("{}: {error}", key.display()))?;
        }
        let users = dir.join("users.json");
        let password_file = dir.join("admin-password");
        if !users.exists() || !password_file.exists() {
            let password = super::secrets::random_token()?;
            let hash = hash_secret(&password)?;
            let text = format!(
                "[\n  {{\"username\": \"admin\", \"password_hash\": \"{hash}\", \"perms\": [\"all\"]}},\n  \
                 {{\"username\": \"*\", \"perms\": [\"status\", \"ready\"]}}\n]\n"
            );
            write_pem(&password_file, &password, true)
                .map_err(|error| format!("{}: {error}", password_file.display()))?;
            write_pem(&users, &text, true).map_err(|error| format!("{}: {error}", users.display()))?;
        }
        let ca = certs.join("ca.pem");
        Ok(Secured { certs, ca, users, password_file })
    }

    fn node_flags(&self, id: u64) -> Vec<String> {
        let cert = self.certs.join(format!("node-{id}.pem")).to_string_lossy().into_owned();
        let key = self.certs.join(format!("node-{id}-key.pem")).to_string_lossy().into_owned();
        let ca = self.ca.to_string_lossy().into_owned();
        let users = self.users.to_string_lossy().into_owned();
        [
            ("--tls-cert", &cert),
            ("--tls-key", &key),
            ("--peer-tls-cert", &cert),
            ("--peer-tls-key", &key),
            ("--peer-tls-ca", &ca),
            ("--auth", &users),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value.clone()])
        .collect()
    }
}

/// `word` quoted for a POSIX shell when it needs it.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '-' | '_' | ':' | ',' | '=' | '+'));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Polls `address` until it reports a leader, up to `bound`.
///
/// # Errors
/// No leader within `bound`.
pub async fn wait_for_leader(client: &commands::Client, bound: Duration) -> Result<u64, String> {
    let deadline = Instant::now() + bound;
    let mut last_error = String::from("no answer");
    while Instant::now() < deadline {
        match commands::status(client).await {
            Ok(status) if status.leader_id != 0 => return Ok(status.leader_id),
            Ok(_) => last_error = "no leader yet".into(),
            Err(error) => last_error = error.message().to_owned(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("no leader within {bound:?}: {last_error}"))
}
