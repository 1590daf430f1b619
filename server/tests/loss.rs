//! Packet loss between the nodes (issue 15): three real nodes in a network
//! namespace of the test's own, nftables dropping 10% and then 30% of the
//! packets of the peer connections (the kernel here has no netem), and
//! `deeb bench` writing meanwhile from inside the namespace. Prints the
//! throughput and the longest time without an acknowledged write in each
//! phase, and fails if writes stop for longer than two election timeouts.
//!
//! Needs root and `nft`: `.ci/loss` installs nftables and runs it
//! (`cargo test -p deeb-server --test loss -- --ignored`).

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::Cluster;

/// The nodes' longest election timeout: raft draws each one from
/// `[election_ticks, 2 * election_ticks)` ticks, 1 s to 2 s by default.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// How long each phase writes.
const PHASE: &str = "8s";

/// A network namespace, deleted when dropped.
struct Namespace(String);

impl Namespace {
    fn create() -> Namespace {
        let name = format!("deeb-loss-{}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        let namespace = Namespace(name);
        namespace.exec(&["ip", "link", "set", "lo", "up"]);
        namespace
    }

    fn exec(&self, command: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.0];
        full.extend_from_slice(command);
        run(&full)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs `command`, panicking with its output unless it succeeds.
fn run(command: &[&str]) -> Output {
    let output = Command::new(command[0]).args(&command[1..]).output().unwrap_or_else(|error| {
        panic!("{command:?} did not start ({error}): this test needs root, iproute2 and nftables (.ci/loss)")
    });
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Drops `percent`% of the packets to and from the peer ports, in both
/// directions (every packet on the namespace's loopback passes `output`).
fn set_loss(namespace: &Namespace, peer_ports: &[u16], percent: u32) {
    let _ = namespace.exec(&["nft", "flush", "ruleset"]);
    if percent == 0 {
        return;
    }
    let ports = peer_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
    namespace.exec(&["nft", "add table inet loss"]);
    namespace.exec(&["nft", "add chain inet loss out { type filter hook output priority 0; }"]);
    for direction in ["dport", "sport"] {
        let rule =
            format!("add rule inet loss out tcp {direction} {{ {ports} }} numgen random mod 100 < {percent} drop");
        namespace.exec(&["nft", &rule]);
    }
}

/// One `deeb bench` run of single-row writes from inside the namespace.
fn bench(namespace: &Namespace, addr: &str) -> serde_json::Value {
    let deeb = env!("CARGO_BIN_EXE_deeb");
    let output = namespace.exec(&[
        deeb,
        "bench",
        "--addr",
        addr,
        "--mode",
        "write",
        "--clients",
        "16",
        "--duration",
        PHASE,
        "--warmup",
        "1s",
        "--json",
    ]);
    serde_json::from_slice(&output.stdout).expect("bench prints one JSON report")
}

#[test]
#[ignore = "needs root and nftables: run by .ci/loss"]
fn writes_go_on_under_packet_loss_between_nodes() {
    let namespace = Namespace::create();
    let launcher = ["ip", "netns", "exec", namespace.0.as_str()];
    let cluster = Cluster::start_under(&launcher, 3, &[]);
    let deeb = env!("CARGO_BIN_EXE_deeb");
    let addr = cluster.addr(1);
    // A leader, seen from inside the namespace (bounded).
    let mut led = false;
    for _ in 0..100 {
        let status = Command::new("ip").args(["netns", "exec", &namespace.0, deeb, "status", "--addr", &addr]).output();
        if status.is_ok_and(|output| {
            output.status.success() && !String::from_utf8_lossy(&output.stdout).contains("leader unknown")
        }) {
            led = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(led, "no leader within 20 s");
    let peer_ports: Vec<u16> = cluster.peer_ports.values().copied().collect();
    let mut failures = Vec::new();
    for percent in [0, 10, 30] {
        set_loss(&namespace, &peer_ports, percent);
        let report = bench(&namespace, &addr);
        let writes = report["writes"]["per_second"].as_f64().expect("writes per second");
        let gap = report["max_write_gap_ms"].as_f64().expect("longest gap");
        let p99 = report["writes"]["p99_ms"].as_f64().expect("p99");
        println!(
            "{percent:>2}% loss between the nodes: {writes:.0} writes/s, p99 {p99:.0} ms, longest time without an \
             acknowledged write {gap:.0} ms, {} errors",
            report["errors"]
        );
        if writes <= 0.0 || gap > 2.0 * ELECTION_TIMEOUT.as_secs_f64() * 1000.0 {
            failures.push(format!("{percent}% loss: {writes:.0} writes/s, a gap of {gap:.0} ms"));
        }
    }
    set_loss(&namespace, &peer_ports, 0);
    drop(cluster);
    assert!(failures.is_empty(), "writes stalled longer than two election timeouts: {failures:?}");
}
