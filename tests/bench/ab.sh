#!/usr/bin/env bash
# A/B comparison of two Switchboard builds: runs one peer-bench scenario against the signaling
# server of build A, then of build B, for a number of rounds, alternating so that the machine's
# drift hits both alike. Prints one JSON line per run, with "variant": "a" or "b".
#
#   bash tests/bench/ab.sh <target-dir-a> <target-dir-b> <rounds> <scenario> [peer-bench options]
#   bash tests/bench/ab.sh /tmp/before /tmp/after 3 relay --max --seconds 5
#
# Each target directory is a CARGO_TARGET_DIR holding a release build of the workspace's
# binaries (`cargo build --release --locked --workspace --bins`); the load generator is build
# A's. Like peers.sh, the server is pinned to CPU 0, the load generator and Redis to CPU 1.
set -euo pipefail
if [ $# -lt 4 ]; then
  sed -n '2,10p' "$0" >&2
  exit 2
fi
a=$1 b=$2 rounds=$3
shift 3
cd "$(dirname "$0")/../.."
for dir in "$a" "$b"; do
  if [ ! -x "$dir/release/switchboard-signaling" ] || [ ! -x "$dir/release/peer-bench" ]; then
    echo "ab.sh: $dir holds no release build of switchboard-signaling and peer-bench" >&2
    exit 2
  fi
done
export SWITCHBOARD_BIN_PROFILE=release CARGO=/bin/true
SWITCHBOARD_PEERS_DIR=$(bash tests/bench/peers/build.sh | tail -n 1)
export SWITCHBOARD_PEERS_DIR
ulimit -n "$(ulimit -Hn)"
for _ in $(seq 1 "$rounds"); do
  for variant in a b; do
    if [ "$variant" = a ]; then dir=$a; else dir=$b; fi
    CARGO_TARGET_DIR=$dir taskset -c 1 "$a/release/peer-bench" --server-cpu 0 \
      --system switchboard "$@" | sed "s/^{/{\"variant\":\"$variant\",/"
  done
done
