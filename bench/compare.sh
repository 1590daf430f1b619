#!/usr/bin/env bash
# deeb beside etcd, on this machine, in one run (issue 15).
#
# Starts a 3-node deeb (release build, `deeb serve` processes) and a
# 3-member etcd (Debian's etcd-server: `apt-get install etcd-server
# etcd-client`), both on loopback with their data on the same disk, and
# drives each with the same closed-loop load (`deeb bench`; `--target etcd`
# speaks etcd's KV API): one connection per client spread over the three
# nodes, the leader first (so one client talks to the leader of either),
# 100-byte values, 1000 keys. Prints, per workload, both systems'
# throughput and p50 and their ratio; then leader kill -9 to the next
# write acknowledged through a follower (median of KILL_TRIALS), every
# server process's peak RSS, and the machine's load. Stale reads are also
# run against one SQLite file behind the same gRPC API with no raft
# (`deeb bench-baseline`): what a point read costs through a server.
#
# With LOSS="10 30" (needs root, iproute2 and nftables) everything runs in a
# network namespace of its own, and after the runs above both systems take
# the 16-client write load again while nftables drops that percentage of
# the packets between their nodes (client traffic is not dropped).
#
# Needs python3 (for the table). Knobs: DURATION (default 10s), WARMUP
# (2s), KILL_TRIALS (5), DIR (where data goes; default under /var/tmp, a
# disk, not tmpfs), BASE_PORT (17001), LOSS (none).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${LOSS:-}" && -z "${DEEB_COMPARE_NETNS:-}" ]]; then
    export DEEB_COMPARE_NETNS=deeb-compare-$$
    ip netns add "$DEEB_COMPARE_NETNS"
    trap 'ip netns del "$DEEB_COMPARE_NETNS"' EXIT
    ip netns exec "$DEEB_COMPARE_NETNS" ip link set lo up
    ip netns exec "$DEEB_COMPARE_NETNS" "$0" "$@"
    exit
fi
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
KILL_TRIALS=${KILL_TRIALS:-5}
BASE_PORT=${BASE_PORT:-17001}
command -v etcd >/dev/null && command -v etcdctl >/dev/null ||
    { echo "etcd is not installed: apt-get install etcd-server etcd-client" >&2; exit 1; }
cargo build --release -p deeb-server --quiet
BIN=$PWD/target/release/deeb
DIR=${DIR:-$(mktemp -d /var/tmp/deeb-compare.XXXXXX)}
mkdir -p "$DIR"
RESULTS=$DIR/results.jsonl
: >"$RESULTS"

deeb_client() { echo "127.0.0.1:$((BASE_PORT + $1 - 1))"; }
deeb_peer() { echo "127.0.0.1:$((BASE_PORT + 100 + $1 - 1))"; }
deeb_http() { echo "127.0.0.1:$((BASE_PORT + 400 + $1 - 1))"; }
etcd_client() { echo "127.0.0.1:$((BASE_PORT + 200 + $1 - 1))"; }
etcd_peer() { echo "127.0.0.1:$((BASE_PORT + 300 + $1 - 1))"; }
baseline_client() { echo "127.0.0.1:$((BASE_PORT + 500))"; }
DEEB_PEERS="1=$(deeb_peer 1),2=$(deeb_peer 2),3=$(deeb_peer 3)"
ETCD_CLUSTER="e1=http://$(etcd_peer 1),e2=http://$(etcd_peer 2),e3=http://$(etcd_peer 3)"
ETCD_ENDPOINTS="$(etcd_client 1),$(etcd_client 2),$(etcd_client 3)"
declare -A DEEB_PIDS ETCD_PIDS PEAK_KB
BASELINE_PID=

start_deeb() {
    "$BIN" serve --id "$1" --listen "$(deeb_client "$1")" --peer-listen "$(deeb_peer "$1")" \
        --http-listen "$(deeb_http "$1")" --peers "$DEEB_PEERS" \
        --data-dir "$DIR/deeb-$1" --log-level warn 2>>"$DIR/deeb-$1.log" &
    DEEB_PIDS[$1]=$!
}
start_etcd() {
    local state=${2:-new}
    etcd --name "e$1" --data-dir "$DIR/etcd-$1" \
        --listen-client-urls "http://$(etcd_client "$1")" --advertise-client-urls "http://$(etcd_client "$1")" \
        --listen-peer-urls "http://$(etcd_peer "$1")" --initial-advertise-peer-urls "http://$(etcd_peer "$1")" \
        --initial-cluster "$ETCD_CLUSTER" --initial-cluster-state "$state" --initial-cluster-token deeb-compare \
        --logger zap --log-level error 2>>"$DIR/etcd-$1.log" &
    ETCD_PIDS[$1]=$!
}
# Peak RSS (VmHWM) of a process, remembered per name across restarts.
note_peak() {
    local name=$1 pid=$2 kb
    kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [[ -n "$kb" && "$kb" -gt "${PEAK_KB[$name]:-0}" ]] && PEAK_KB[$name]=$kb
    return 0
}
note_peaks() {
    for id in 1 2 3; do
        note_peak "deeb-$id" "${DEEB_PIDS[$id]}"
        note_peak "etcd-$id" "${ETCD_PIDS[$id]}"
    done
}
stop_all() {
    set +e
    for pid in "${DEEB_PIDS[@]}" "${ETCD_PIDS[@]}" $BASELINE_PID; do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
    [[ -z "${KEEP:-}" ]] && rm -rf "$DIR"
}
trap stop_all EXIT

deeb_leader() {
    "$BIN" status --addr "$(deeb_client "$1")" 2>/dev/null | sed -n 's/.*leader \([0-9]*\)).*/\1/p' | head -1
}
etcd_leader() { # the member number of etcd's leader, asked of member $1
    etcdctl --endpoints="$ETCD_ENDPOINTS" endpoint status 2>/dev/null |
        awk -F', ' '$5 == "true" {print $1}' | sed -n "s/.*:\([0-9]*\)$/\1/p" | head -1 |
        while read -r port; do echo $((port - BASE_PORT - 200 + 1)); done
}
etcd_endpoints_leader_first() { # as deeb bench orders deeb's nodes
    local leader
    leader=$(etcd_leader 1)
    leader=${leader:-1}
    echo "$(etcd_client "$leader"),$(etcd_client $((leader % 3 + 1))),$(etcd_client $(((leader + 1) % 3 + 1)))"
}
wait_for() { # up to 30 s for "$@" to succeed
    for _ in $(seq 1 150); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "gave up waiting for: $*" >&2
    return 1
}
# Each attempt is cut at half a second (the clients' own timeouts are longer
# and differ: etcdctl would wait out its whole --command-timeout while no
# leader is elected), so both are retried at the same granularity.
deeb_write() { timeout 0.5 "$BIN" exec --addr "$(deeb_client "$1")" "INSERT OR REPLACE INTO bench_kv (k, v) VALUES (0, 'x')"; }
etcd_write() { timeout 0.5 etcdctl --endpoints="$(etcd_client "$1")" --command-timeout=450ms put bench/kill x; }
has_leader() { [[ -n "$(deeb_leader "$1")" ]]; }
deeb_table() { timeout 5 "$BIN" exec --addr "$(deeb_client 1)" "CREATE TABLE IF NOT EXISTS bench_kv (k INTEGER PRIMARY KEY, v BLOB)"; }

for id in 1 2 3; do start_deeb "$id"; start_etcd "$id"; done
wait_for has_leader 1
wait_for deeb_table
wait_for deeb_write 1
wait_for etcd_write 1
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME"), data on $(df --output=source,fstype "$DIR" | tail -1)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

bench() { # system, then deeb bench flags (and --loss PERCENT, a tag)
    local system=$1 addr loss=0
    shift
    if [[ "${*: -2:1}" == --loss ]]; then
        loss=${*: -1}
        set -- "${@:1:$(($# - 2))}"
    fi
    local target=$system tag=
    case $system in
        deeb) addr=$(deeb_client 1) ;;
        etcd) addr=$(etcd_endpoints_leader_first) ;;
        sqlite) addr=$(baseline_client); target=deeb; tag=,\"baseline\":true; set -- "$@" --one-node ;;
    esac
    "$BIN" bench --target "$target" --addr "$addr" --duration "$DURATION" --warmup "$WARMUP" --json "$@" |
        sed "s/}\$/,\"loss\":$loss$tag}/" >>"$RESULTS"
    note_peaks
}
for clients in 1 16 64; do
    bench deeb --mode write --clients "$clients"
    bench etcd --mode write --clients "$clients"
done
for consistency in linearizable stale; do
    for clients in 1 64; do
        bench deeb --mode read --consistency "$consistency" --clients "$clients"
        bench etcd --mode read --consistency "$consistency" --clients "$clients"
    done
done
bench deeb --mode read --consistency lease --clients 1
bench deeb --mode read --consistency lease --clients 64
"$BIN" bench-baseline --file "$DIR/baseline.db" --listen "$(baseline_client)" 2>>"$DIR/baseline.log" &
BASELINE_PID=$!
baseline_up() { timeout 2 "$BIN" bench --addr "$(baseline_client)" --one-node --mode read --consistency stale \
    --clients 1 --duration 100ms --warmup 0s; }
wait_for baseline_up
bench sqlite --mode read --consistency stale --clients 1
bench sqlite --mode read --consistency stale --clients 64
echo "load after the load runs: $(cut -d' ' -f1-3 /proc/loadavg)"

# Loss between the nodes: the peer ports of both systems, both directions,
# a rule (with a counter of what it dropped) per system.
set_loss() {
    nft flush ruleset
    [[ "$1" == 0 ]] && return
    nft add table inet loss
    nft 'add chain inet loss out { type filter hook output priority 0; }'
    local system ports direction
    for system in deeb etcd; do
        ports=$(for id in 1 2 3; do "${system}_peer" "$id"; done | sed 's/.*://' | paste -sd, -)
        for direction in dport sport; do
            nft "add rule inet loss out tcp $direction { $ports } numgen random mod 100 < $1 counter drop comment \"$system\""
        done
    done
}
dropped() { # packets the rules of system $1 dropped so far
    nft list ruleset | awk -v name="\"$1\"" 'index($0, name) {for (i = 1; i < NF; i++) if ($i == "packets") sum += $(i + 1)} END {print sum + 0}'
}
for percent in ${LOSS:-}; do
    set_loss "$percent"
    bench deeb --mode write --clients 16 --loss "$percent"
    bench etcd --mode write --clients 16 --loss "$percent"
    echo "$percent% loss: nftables dropped $(dropped deeb) packets between deeb's nodes, $(dropped etcd) between etcd's"
    set_loss 0
done

# Leader kill -9 to the next write acknowledged through a follower.
now_ms() { echo $(($(date +%s%N) / 1000000)); }
kill_trial() { # system
    local system=$1 leader follower started pid
    leader=$("${system}_leader" 1)
    [[ -n "$leader" ]] || { echo "no $system leader" >&2; return 1; }
    follower=$((leader % 3 + 1))
    if [[ $system == deeb ]]; then pid=${DEEB_PIDS[$leader]}; else pid=${ETCD_PIDS[$leader]}; fi
    note_peaks
    started=$(now_ms)
    kill -9 "$pid"
    wait "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do "${system}_write" "$follower" >/dev/null 2>&1 && break; sleep 0.01; done
    echo "$system $(($(now_ms) - started))" >>"$DIR/kills"
    if [[ $system == deeb ]]; then start_deeb "$leader"; else start_etcd "$leader" existing; fi
    wait_for "${system}_write" "$leader"
    sleep 3 # the restarted member catches up before the next trial
}
: >"$DIR/kills"
for _ in $(seq 1 "$KILL_TRIALS"); do
    kill_trial deeb
    kill_trial etcd
done
note_peaks

python3 - "$RESULTS" "$DIR/kills" <<'EOF'
import json, statistics, sys
every = [json.loads(line) for line in open(sys.argv[1])]
baseline = [run for run in every if run.get("baseline")]
every = [run for run in every if not run.get("baseline")]
runs = [run for run in every if run["loss"] == 0]
lossy = [run for run in every if run["loss"] > 0]
def find(target, mode, consistency, clients):
    for run in runs:
        if (run["target"], run["mode"], run["clients"]) == (target, mode, clients) and \
           (mode == "write" or run["consistency"] == consistency):
            return run
def figures(run, mode):
    if run is None:
        return None, None
    side = run["writes"] if mode == "write" else run["reads"]
    return side["per_second"], side["p50_ms"]
print()
print(f"| workload | clients | deeb ops/s | etcd ops/s | deeb/etcd | deeb p50 ms | etcd p50 ms |")
print(f"|---|---|---|---|---|---|---|")
rows = [("write", "linearizable", c) for c in (1, 16, 64)]
rows += [("read", k, c) for k in ("linearizable", "lease", "stale") for c in (1, 64)]
for mode, consistency, clients in rows:
    deeb_ops, deeb_p50 = figures(find("deeb", mode, consistency, clients), mode)
    etcd_ops, etcd_p50 = figures(find("etcd", mode, consistency, clients), mode)
    name = "writes" if mode == "write" else f"{consistency} reads"
    ratio = f"{deeb_ops / etcd_ops:.2f}" if deeb_ops and etcd_ops else "-"
    fmt = lambda v, spec: format(v, spec) if v is not None else "-"
    print(f"| {name} | {clients} | {fmt(deeb_ops, '.0f')} | {fmt(etcd_ops, '.0f')} | {ratio} | "
          f"{fmt(deeb_p50, '.2f')} | {fmt(etcd_p50, '.2f')} |")
if baseline:
    print("\n| stale reads | clients | deeb (3 nodes) ops/s | one SQLite file behind a server ops/s | deeb/SQLite |")
    print("|---|---|---|---|---|")
    for run in baseline:
        deeb = find("deeb", "read", "stale", run["clients"])
        ours, theirs = deeb["reads"]["per_second"] if deeb else None, run["reads"]["per_second"]
        ratio = f"{ours / theirs:.2f}" if ours and theirs else "-"
        print(f"| stale | {run['clients']} | {ours:.0f} | {theirs:.0f} | {ratio} |")
if lossy:
    print("\n| loss between nodes | system | writes/s (16 clients) | p50 ms | p99 ms | longest gap ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for run in lossy:
        print(f"| {run['loss']}% | {run['target']} | {run['writes']['per_second']:.0f} | {run['writes']['p50_ms']:.1f} | "
              f"{run['writes']['p99_ms']:.0f} | {run['max_write_gap_ms']:.0f} | {run['errors']} |")
errors = sum(run["errors"] for run in every)
print(f"\nerrors in all runs: {errors}")
for run in runs:
    if run.get("entries_per_write") is not None:
        print(f"deeb write, {run['clients']} clients: {run['entries_per_write']:.3f} raft entries per write")
kills = {}
for line in open(sys.argv[2]):
    system, ms = line.split()
    kills.setdefault(system, []).append(int(ms))
for system, times in sorted(kills.items()):
    print(f"leader kill -9 to next acknowledged write via a follower, {system}: median {statistics.median(times):.0f} ms (trials: {times})")
EOF
for name in $(printf '%s\n' "${!PEAK_KB[@]}" | sort); do
    echo "peak RSS $name: $((PEAK_KB[$name] / 1024)) MiB"
done
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
