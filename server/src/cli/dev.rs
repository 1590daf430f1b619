//! `deeb dev`: a local cluster of `deeb serve` child processes.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::args::DevArgs;
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
    for index in 0..args.nodes {
        addresses.push(format!("127.0.0.1:{}", port(index)?));
        peer_addresses.push(format!("127.0.0.1:{}", port(PEER_PORT_OFFSET + index)?));
    }
    let peers: Vec<String> =
        peer_addresses.iter().enumerate().map(|(index, address)| format!("{}={address}", index + 1)).collect();
    let mut children = Children(Vec::new());
    let mut started = Vec::new();
    for (index, (address, peer_address)) in addresses.iter().zip(&peer_addresses).enumerate() {
        let id = index as u64 + 1;
        let listeners = Listeners { client: address, peer: peer_address };
        let (child, command_line) = spawn_node(id, listeners, &peers.join(","), &args.dir, log_level)?;
        started.push(format!("node {id}: pid {}: {command_line}", child.id().unwrap_or(0)));
        children.0.push(child);
    }
    let leader = wait_for_leader(&addresses[0], Duration::from_secs(20)).await?;
    println!(
        "deeb dev cluster: {} nodes, clients on {} (peers on {}); leader is node {leader}",
        args.nodes,
        addresses.join(", "),
        peer_addresses.join(", ")
    );
    // A person needs these to kill a node and start it again.
    for line in &started {
        println!("{line}");
    }
    println!("data under {}, logs in node-N.log there", args.dir.display());
    println!("connect with: deeb shell --addr {}", addresses[0]);
    println!("press Ctrl-C to stop");
    super::shutdown_signal().await;
    println!("stopping");
    drop(children);
    Ok(())
}

/// Node N's peer listener is on base-port + this + N - 1.
const PEER_PORT_OFFSET: u64 = 100;

/// A node's two listeners.
struct Listeners<'a> {
    client: &'a str,
    peer: &'a str,
}

/// Starts node `id`; returns it and its command line, as a shell would take it.
fn spawn_node(
    id: u64,
    listeners: Listeners<'_>,
    peers: &str,
    dir: &Path,
    log_level: &str,
) -> Result<(Child, String), String> {
    let exe = std::env::current_exe().map_err(|error| format!("cannot find own executable: {error}"))?;
    let data_dir = dir.join(format!("node-{id}"));
    std::fs::create_dir_all(&data_dir).map_err(|error| format!("{}: {error}", data_dir.display()))?;
    let log = std::fs::File::create(dir.join(format!("node-{id}.log"))).map_err(|error| error.to_string())?;
    let id_text = id.to_string();
    let data_dir_text = data_dir.to_string_lossy();
    let args = [
        "serve",
        "--id",
        &id_text,
        "--listen",
        listeners.client,
        "--peer-listen",
        listeners.peer,
        "--peers",
        peers,
        "--log-level",
        log_level,
        "--data-dir",
        &data_dir_text,
    ];
    let command_line = std::iter::once(exe.to_string_lossy().as_ref())
        .chain(args.iter().copied())
        .map(shell_quote)
        .collect::<Vec<_>>()
        .join(" ");
    let child = Command::new(&exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("starting node {id}: {error}"))?;
    Ok((child, command_line))
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
pub async fn wait_for_leader(address: &str, bound: Duration) -> Result<u64, String> {
    let deadline = Instant::now() + bound;
    let mut last_error = String::from("no answer");
    while Instant::now() < deadline {
        match commands::status(&commands::connect(address)).await {
            Ok(status) if status.leader_id != 0 => return Ok(status.leader_id),
            Ok(_) => last_error = "no leader yet".into(),
            Err(error) => last_error = error.message().to_owned(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("no leader within {bound:?}: {last_error}"))
}
