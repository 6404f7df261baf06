#!/usr/bin/env bash
# Cross-pod relay benchmarks: two release signaling processes (senders on one, receivers on the
# other) sharing one Redis or a 3-master Redis Cluster, so every offer crosses from one process
# to the other through Redis. Latency at 10,000 offers/s (from each message's intended send
# time, so coordinated-omission safe) and the maximum relayed rate. The servers run on CPU 0;
# the load generator and Redis on CPU 1. Writes raw JSON lines to $OUT (default
# target/bench/scale-out.jsonl) and prints a Markdown table. About 2 minutes once built. The
# load generator is peer-bench (tests/bench/src/bin/peer-bench.rs) driving Switchboard alone.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-target/bench/scale-out.jsonl}
mkdir -p "$(dirname "$out")"
export SWITCHBOARD_BIN_PROFILE=release
cargo build --release --locked -q --workspace --bins
ulimit -n "$(ulimit -Hn)"

if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  bench=(taskset -c 1 ./target/release/peer-bench --system switchboard --server-cpu 0)
else
  bench=(./target/release/peer-bench --system switchboard)
fi

: > "$out"
for backend in redis cluster; do
  "${bench[@]}" --backend "$backend" relay --pods 2 --rate 10000 --seconds 10 >> "$out"
  "${bench[@]}" --backend "$backend" relay --pods 2 --max --seconds 5 >> "$out"
done
# The same-process reference on the in-memory store.
"${bench[@]}" --backend memory relay --pods 1 --rate 10000 --seconds 10 >> "$out"

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def lat(l):
    return f"p50 {l['p50_ms']:.3f} ms, p99 {l['p99_ms']:.3f} ms, max {l['max_ms']:.2f} ms"
def cpu(c):
    redis = f", Redis {c['redis_cpu_percent']:.0f}%" if "redis_cpu_percent" in c else ""
    return f"servers CPU {c['server_cpu_percent']:.0f}%, load generator {c['bench_cpu_percent']:.0f}%{redis}"
print("| Backend | Pods | Scenario | Result |\n| --- | --- | --- | --- |")
for r in rows:
    where = f"| {r['backend']} | {r['pods']} |"
    if r["mode"] == "rate":
        print(f"{where} {r['offered_per_second']:,.0f} offers/s, {r['pairs']} pairs | {lat(r['latency'])}; "
              f"{r['achieved_per_second']:,.0f}/s delivered, {r['sent'] - r['received']} lost; "
              f"load generator up to {r['max_sender_lag_ms']:.1f} ms late; {cpu(r['cpu'])} |")
    else:
        print(f"{where} maximum, {r['pairs']} pairs, window {r['window_per_pair']} | "
              f"{r['relayed_per_second']:,.0f} offers/s; {cpu(r['cpu'])} |")
PY
