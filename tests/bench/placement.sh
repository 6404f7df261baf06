#!/usr/bin/env bash
# Placement benchmarks: in-memory decisions/s with 1,000 nodes, then against a real etcd +
# kube-apiserver with the release operator: a 2,000-room burst, create->placed latency at a
# steady 20 creates/s, the raw status-PATCH rate of the same client, and failover of 1,000
# rooms. Writes raw JSON lines to $OUT (default target/bench/placement.jsonl) and prints a
# Markdown table for docs/benchmarks.md. Takes about 4 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-target/bench/placement.jsonl}
mkdir -p "$(dirname "$out")"
SWITCHBOARD_CONTROLPLANE_DIR=$(bash tests/controlplane/build.sh | tail -n 1)
export SWITCHBOARD_CONTROLPLANE_DIR SWITCHBOARD_BIN_PROFILE=release
cargo build --release --locked -q -p switchboard-operator -p switchboard-bench --bin switchboard-operator --bin placement-bench
./target/release/placement-bench decide --nodes 1000 --seconds 3 > "$out"
./target/release/placement-bench apiserver --burst 2000 --steady-rate 20 --steady-seconds 30 --failover-rooms 1000 >> "$out"
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| Scenario | Result |\n| --- | --- |")
for r in rows:
    s = r["scenario"]
    if s == "decide":
        print(f"| decide, {r['nodes']} nodes, {r['strategy']}, {r['method']} | {r['decisions_per_second']:,.0f} decisions/s |")
    elif s == "burst":
        print(f"| burst of {r['rooms']} rooms | {r['placements_per_second']:,.0f} placements/s ({r['placing_s']:.2f} s from operator ready to last placed) |")
    elif s == "steady":
        c = r["create_to_placed"]
        print(f"| create->placed at {r['rate_per_s']:.0f}/s ({r['rooms']} rooms) | p50 {c['p50_ms']:.1f} ms, p90 {c['p90_ms']:.1f} ms, p99 {c['p99_ms']:.1f} ms, max {c['max_ms']:.1f} ms |")
    elif s == "raw_status_patch":
        print(f"| raw status PATCH, same client, {r['concurrency']} in flight | {r['patches_per_second']:,.0f} patches/s |")
    elif s == "failover":
        print(f"| failover of {r['rooms']} rooms (grace {r['failover_grace_s']:.0f} s) | all moved {r['all_moved_after_grace_s']:.2f} s after the node counted as failed ({r['all_moved_after_detection_s']:.2f} s after NotReady) |")
PY
