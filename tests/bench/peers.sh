#!/usr/bin/env bash
# Peer comparison: Switchboard, socket.io with @socket.io/redis-adapter, and Centrifugo with its
# Redis engine, one after the other in one run, driven by the same load generator
# (tests/bench/src/bin/peer-bench.rs). Every server process is pinned to CPU 0; the load generator
# and Redis run on CPU 1.
#
# Centrifugo runs twice: as configured for the least work (a personal channel per client, no
# history, no presence), and doing the same work as Switchboard ("centrifugo-same-work": each
# client also subscribes to its room's channel, with presence and join/leave pushes to the room,
# and the personal channels keep a 256-message history for recovery, like Switchboard's
# mailbox). The second differs in its channels only, so it gets no idle runs.
#
# Scenarios per system: idle density (server RSS per joined idle connection at 1k, 5k, 10k, the
# most the descriptor limit allows, 50k and 100k: what does not fit is recorded as skipped with
# its reason), join rate (5,000 connections, 256 in flight, Redis), cross-process relay through
# Redis between two server processes at 1k, 2k, 5k, 10k and 20k messages/s (latency from each
# message's intended send time), and the maximum relay rate.
#
# Writes raw JSON lines to $OUT (default target/bench/peers.jsonl), the Markdown tables to
# ${OUT%.jsonl}.md, and the plots to docs/images/peers-cpu.png, peers-latency.png and
# peers-memory.png.
# Takes about 9 minutes on 2 cores once built. Run it on a quiet machine: it records the load
# average and the busiest processes at its start.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-target/bench/peers.jsonl}
images=${IMAGES:-docs/images}
mkdir -p "$(dirname "$out")" "$images"
cache=${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}
export SWITCHBOARD_BIN_PROFILE=release
# The same build as the harness's workspace_binary, so the bench does not rebuild the server.
cargo build --release --locked -q --workspace --bins
target=${CARGO_TARGET_DIR:-target}
SWITCHBOARD_PEERS_DIR=$(bash tests/bench/peers/build.sh | tail -n 1)
export SWITCHBOARD_PEERS_DIR

# Plots: matplotlib in a venv cached next to the peers.
venv="$cache/venv-matplotlib-3.10.3"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import matplotlib" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check matplotlib==3.10.3
fi

# File descriptors: every connection takes one in the server and one in the load generator.
# Servers inherit this shell's limits through peer-bench. Only the hard limit caps it, and
# raising that needs CAP_SYS_RESOURCE; peer-bench records a scenario as skipped when it does
# not fit.
want=110000
ulimit -Hn "$want" 2>/dev/null || true
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then want=$hard; fi
ulimit -n "$want"

if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  bench=(taskset -c 1 "$target/release/peer-bench" --server-cpu 0)
else
  bench=("$target/release/peer-bench")
fi

node_version=$(node --version)
cf_version=$("$SWITCHBOARD_PEERS_DIR/centrifugo" version | awk '{print $2}')
redis_version=$(redis-server --version | awk '{print $3}')
python3 - "$node_version" "$cf_version" "$redis_version" > "$out" <<'PY'
import json, os, resource, subprocess, sys
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal:")) / 1048576
busiest = subprocess.run(["ps", "-eo", "pcpu,comm", "--sort=-pcpu"], capture_output=True, text=True).stdout.splitlines()[1:6]
node, cf, redis = sys.argv[1:4]
print(json.dumps({"scenario": "machine", "cpus": os.cpu_count(), "model": model, "mem_gib": mem,
                  "loadavg_1m_at_start": os.getloadavg()[0], "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                  "busiest_at_start": [b.strip() for b in busiest],
                  "versions": f"Node {node}, socket.io 4.8.4, @socket.io/redis-adapter 8.3.0, ioredis 5.9.3; Centrifugo {cf}; redis-server {redis}"}))
PY

# Between 10k and 50k, also the most connections the descriptor limit lets through.
sizes=(1000 5000 10000)
most=$(( ($(ulimit -n) - 1000) / 1000 * 1000 ))
if [ "$most" -gt 10000 ] && [ "$most" -lt 50000 ]; then sizes+=("$most"); fi
sizes+=(50000 100000)
for system in switchboard socketio centrifugo centrifugo-same-work; do
  echo "== $system" >&2
  if [ "$system" != centrifugo-same-work ]; then
    for n in "${sizes[@]}"; do
      "${bench[@]}" --system "$system" idle --connections "$n" >> "$out"
    done
  fi
  "${bench[@]}" --system "$system" joins --connections 5000 >> "$out"
  for rate in 1000 2000 5000 10000 20000; do
    "${bench[@]}" --system "$system" relay --rate "$rate" --seconds 10 >> "$out"
  done
  "${bench[@]}" --system "$system" relay --max --seconds 5 >> "$out"
done

"$venv/bin/python" tests/bench/peers/report.py "$out" "$images" | tee "${out%.jsonl}.md"
echo "plots: $images/peers-cpu.png $images/peers-latency.png $images/peers-memory.png" >&2
