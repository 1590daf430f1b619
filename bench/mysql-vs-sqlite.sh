#!/usr/bin/env bash
# `deeb bench` against a 3-node deeb on the SQLite backend and then on the
# MySQL backend (three MariaDB servers of its own, `deeb dev --backend
# mysql`), same workloads, one after the other; prints one table.
# Needs MariaDB (apt-get install mariadb-server) and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
deeb=${DEEB:-target/release/deeb}
seconds=${SECONDS_PER_RUN:-5}
work=$(mktemp -d "${TMPDIR:-/tmp}/deeb-bench-XXXXXX")
dev=""
trap '[[ -n "$dev" ]] && kill -INT $dev 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

run() { # backend
  local backend=$1
  "$deeb" dev --backend "$backend" --dir "$work/$backend" --base-port 17001 >"$work/$backend.out" 2>&1 &
  dev=$!
  for _ in $(seq 1 600); do
    grep -q "press Ctrl-C" "$work/$backend.out" && break
    kill -0 $dev 2>/dev/null || { cat "$work/$backend.out" >&2; exit 1; }
    sleep 0.1
  done
  for spec in "write 1" "write 16" "write 64" "read 1 linearizable" "read 64 linearizable" "read 1 stale" "read 64 stale"; do
    set -- $spec
    local extra=()
    [[ $# -ge 3 ]] && extra=(--consistency "$3")
    local json
    json=$("$deeb" bench --addr 127.0.0.1:17001 --mode "$1" --clients "$2" "${extra[@]}" \
      --warmup 1s --duration "${seconds}s" --json)
    python3 - "$backend" "$spec" "$json" <<'PY'
import json, sys
backend, spec, text = sys.argv[1:4]
result = json.loads(text)
kind = result["writes"] if result["mode"] == "write" else result["reads"]
print(f"| {backend} | {spec} | {result['ops_per_second']:.0f} | {kind['p50_ms']:.2f} | {kind['p99_ms']:.2f} | {result['errors']} |")
PY
  done
  kill -INT $dev; wait $dev || true; dev=""
}
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; load $(cut -d" " -f1-3 /proc/loadavg)"
echo "| backend | workload, clients, consistency | ops/s | p50 ms | p99 ms | errors |"
echo "|---|---|---|---|---|---|"
run sqlite
run mysql
