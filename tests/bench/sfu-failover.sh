#!/usr/bin/env bash
# SFU failover with real media: runs tests/tests/sfu_call.rs with RUNS chained failovers
# (default 5; Janus A -> B -> C ..., one SIGKILL each) and reports, per run, SIGKILL -> node
# NotReady (detection, seen through an apiserver watch), NotReady -> `sfuReassigned` at both
# demo pages, -> first frame decoded by both pages through the new Janus (rejoin), and the
# total. The operator runs with its Janus health check (1 s period, threshold 2) and
# --failover-grace=0s. Writes the raw lines to $OUT (default target/bench/sfu-failover.txt) and
# prints a Markdown table for docs/benchmarks.md; the test's whole output goes to the .log
# beside it. Needs what the test needs (root, Janus,
# Chromium, the control plane); takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS:-5}
out=${OUT:-target/bench/sfu-failover.txt}
mkdir -p "$(dirname "$out")"
SWITCHBOARD_CONTROLPLANE_DIR=$(bash tests/controlplane/build.sh | tail -n 1)
export SWITCHBOARD_CONTROLPLANE_DIR SWITCHBOARD_SFU_FAILOVER_RUNS=$runs SWITCHBOARD_REQUIRE_ALL=1
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
log=${out%.txt}.log
if ! cargo test -q --locked -p switchboard-tests --test sfu_call -- --nocapture >"$log" 2>&1; then
  tail -n 80 "$log" >&2
  echo "sfu-failover: the test failed" >&2
  exit 1
fi
grep '^failover-run ' "$log" >"$out"
python3 - "$out" "$runs" <<'PY'
import statistics, sys
rows = []
for line in open(sys.argv[1]):
    fields = dict(f.split("=", 1) for f in line.split()[1:])
    rows.append(fields)
if len(rows) != int(sys.argv[2]):
    sys.exit(f"expected {sys.argv[2]} runs, got {len(rows)}")
keys = ["detection_ms", "reassigned_ms", "rejoin_ms", "total_ms"]
print("| Run | Janus | SIGKILL -> NotReady | NotReady -> sfuReassigned | -> first frame through the new Janus | Total |")
print("| --- | --- | --- | --- | --- | --- |")
for r in rows:
    print(f"| {r['n']} | {r['from']} -> {r['to']} | " + " | ".join(f"{int(r[k])} ms" for k in keys) + " |")
for name, f in [("median", statistics.median), ("max", max)]:
    print(f"| {name} | | " + " | ".join(f"{f(int(r[k]) for r in rows):.0f} ms" for k in keys) + " |")
PY
