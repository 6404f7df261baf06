#!/usr/bin/env bash
# Signaling benchmarks against the release server on loopback: RSS per idle joined connection
# at 10k and 50k connections, joins/s with the Redis store, same-pod relay latency at 1,000
# and 5,000 offers/s (from each message's intended send time, so coordinated-omission safe),
# and the maximum relay rate. The server runs on CPU 0, the load generator and Redis on CPU 1.
# Writes raw JSON lines to $OUT (default target/bench/signaling.jsonl) and prints a Markdown
# table for docs/benchmarks.md. Takes about 3 minutes on 2 cores once built. The load generator
# is peer-bench (tests/bench/src/bin/peer-bench.rs) driving Switchboard alone.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-target/bench/signaling.jsonl}
mkdir -p "$(dirname "$out")"
export SWITCHBOARD_BIN_PROFILE=release
# The same build as the harness's workspace_binary, so the bench does not rebuild the server.
cargo build --release --locked -q --workspace --bins

# File descriptors: every connection takes one in the server and one in the load generator.
# The server is started by peer-bench and inherits its limits, so raising the soft limit
# of this shell covers both processes. Only the hard limit caps it, and raising that needs
# CAP_SYS_RESOURCE; peer-bench reports a scenario as skipped when the limit is too low.
want=110000
ulimit -Hn "$want" 2>/dev/null || true
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then want=$hard; fi
ulimit -n "$want"

if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  bench=(taskset -c 1 ./target/release/peer-bench --system switchboard --server-cpu 0)
else
  bench=(./target/release/peer-bench --system switchboard)
fi

python3 - > "$out" <<'PY'
import json, os, resource
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(json.dumps({"scenario": "machine", "cpus": os.cpu_count(), "model": model,
                  "loadavg_1m_at_start": os.getloadavg()[0], "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}))
PY
for n in 10000 50000; do
  "${bench[@]}" --backend memory idle --connections "$n" >> "$out"
done
# Where 50k does not fit under the descriptor limit, also measure the most that does.
most=$(( ($(ulimit -n) - 1000) / 1000 * 1000 ))
if [ "$most" -gt 10000 ] && [ "$most" -lt 50000 ]; then
  "${bench[@]}" --backend memory idle --connections "$most" >> "$out"
fi
"${bench[@]}" --backend redis joins --connections 5000 >> "$out"
# Same-pod relay: one process on its in-process store.
"${bench[@]}" --backend memory relay --pods 1 --rate 1000 --seconds 10 >> "$out"
"${bench[@]}" --backend memory relay --pods 1 --rate 5000 --seconds 10 >> "$out"
"${bench[@]}" --backend memory relay --pods 1 --max --seconds 5 >> "$out"

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def lat(l):
    return f"p50 {l['p50_ms']:.3f} ms, p99 {l['p99_ms']:.3f} ms, max {l['max_ms']:.2f} ms"
def cpu(c):
    redis = f", Redis {c['redis_cpu_percent']:.0f}%" if "redis_cpu_percent" in c else ""
    return f"server CPU {c['server_cpu_percent']:.0f}%, load generator {c['bench_cpu_percent']:.0f}%{redis}"
print("| Scenario | Result |\n| --- | --- |")
for r in rows:
    s = r["scenario"]
    if s == "machine":
        print(f"| machine | {r['cpus']} × {r['model']}; 1-min load {r['loadavg_1m_at_start']:.2f} at start; nofile {r['nofile']} |")
    elif "skipped" in r:
        print(f"| {s}, {r['connections']:,} connections | not run: {r['skipped']} |")
    elif s == "idle":
        mib = lambda b: b / 1048576
        print(f"| idle, {r['connections']:,} joined connections (rooms of {r['room_size']}) | "
              f"{r['kib_per_connection']:.1f} KiB per connection (server RSS {mib(r['rss_before_bytes']):.0f} → "
              f"{mib(r['rss_after_bytes']):.0f} MiB); connected and joined at {r['connect_joins_per_second']:,.0f}/s |")
    elif s == "joins":
        print(f"| joins, {r['backend']} store, {r['connections']:,} ({r['concurrency']} in flight) | "
              f"{r['joins_per_second']:,.0f} joins/s ({cpu(r['cpu_during_joins'])}); join {lat(r['join_latency'])}; "
              f"WebSocket connects {r['connects_per_second']:,.0f}/s |")
    elif s == "relay" and r["mode"] == "rate":
        print(f"| relay at {r['offered_per_second']:,.0f} offers/s, {r['pairs']} pairs, {r['seconds']:.0f} s | "
              f"{lat(r['latency'])} (from intended send time; from actual send p50 "
              f"{r['latency_from_actual_send']['p50_ms']:.3f} ms, p99 {r['latency_from_actual_send']['p99_ms']:.3f} ms); "
              f"{r['achieved_per_second']:,.0f}/s delivered, {r['sent'] - r['received']} lost; {cpu(r['cpu'])} |")
    elif s == "relay":
        print(f"| relay, maximum, {r['pairs']} pairs, window {r['window_per_pair']}, {r['seconds']:.0f} s | "
              f"{r['relayed_per_second']:,.0f} offers/s ({cpu(r['cpu'])}); latency under saturation {lat(r['latency_under_saturation'])} |")
PY
