#!/usr/bin/env bash
# What a webhook receiver that never comes back costs signaling: joins/s (each join and leave
# produces webhook events) and cross-pod relay latency, with no webhooks and then with every
# pod posting to a URL nobody listens on (connection refused, retried for 60 s, queue of
# 4,096 per pod, then dropped and counted). Two release servers on Redis, pinned to CPU 0; the
# load generator and Redis on CPU 1. Writes JSON lines to $OUT (default
# target/bench/webhooks.jsonl) and prints a Markdown table for docs/benchmarks.md. About a
# minute once built; run it at normal priority on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-target/bench/webhooks.jsonl}
mkdir -p "$(dirname "$out")"
: > "$out"
export SWITCHBOARD_BIN_PROFILE=release
cargo build --release --locked -q --workspace --bins

if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  bench=(taskset -c 1 ./target/release/peer-bench --system switchboard --backend redis --server-cpu 0)
else
  bench=(./target/release/peer-bench --system switchboard --backend redis)
fi
# A port nothing listens on: every delivery attempt is refused, for the whole run.
dead_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dead=(--server-arg="--webhook-url=http://127.0.0.1:$dead_port/hooks"
      --server-arg="--webhook-key=bench=webhook-bench-secret-0123456789abcdef")

tag() { python3 -c 'import json,sys; [print(json.dumps({**json.loads(l), "webhooks": sys.argv[1]})) for l in sys.stdin if l.strip()]' "$1"; }
for mode in none dead; do
  extra=()
  if [ "$mode" = dead ]; then extra=("${dead[@]}"); fi
  "${bench[@]}" "${extra[@]}" joins --connections 3000 | tag "$mode" >> "$out"
  "${bench[@]}" "${extra[@]}" relay --pods 2 --rate 5000 --seconds 5 | tag "$mode" >> "$out"
done

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| Webhooks | Scenario | Result |\n| --- | --- | --- |")
for r in rows:
    who = "none" if r["webhooks"] == "none" else "dead receiver (refused)"
    if r["scenario"] == "joins":
        l = r["join_latency"]
        print(f"| {who} | joins, 3,000 ({r['concurrency']} in flight) | {r['joins_per_second']:,.0f} joins/s; "
              f"join p50 {l['p50_ms']:.3f} ms, p99 {l['p99_ms']:.3f} ms; server CPU "
              f"{r['cpu_during_joins']['server_cpu_percent']:.0f}% |")
    elif r["scenario"] == "relay":
        l = r["latency"]
        print(f"| {who} | relay across 2 pods, {r['offered_per_second']:,.0f} offers/s, 5 s | "
              f"p50 {l['p50_ms']:.3f} ms, p99 {l['p99_ms']:.3f} ms, max {l['max_ms']:.2f} ms |")
PY
