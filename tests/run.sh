#!/usr/bin/env bash
# Runs Switchboard's whole test suite on a fresh Debian machine. It installs what is missing by
# itself: Debian packages through apt-get (as root), and the Kubernetes control plane built
# from its Go modules into ~/.cache/switchboard (kept between runs, so warm runs skip it).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

say() { printf '\n==> %s\n' "$*"; }

# Debian packages the tests start for real: redis-server (and redis-cli, which creates the
# test Redis Cluster); coturn (turnserver and turnutils_uclient); setpriv (util-linux) ties
# test servers' lifetime to the test that started them.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v turnserver >/dev/null 2>&1 || missing+=(coturn)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
# Real-browser WebRTC tests: headless Chromium driven by playwright-core (npm), inside a
# network namespace made with `ip netns`.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# A real SFU: Debian's Janus (1.1.2), started by the tests with their own configuration (the
# package starts nothing by itself).
command -v janus >/dev/null 2>&1 || missing+=(janus)
# Container images: Debian's docker daemon, and debootstrap for the local base images (there is
# no registry to pull from); tests/tests/chart_images.rs builds and runs both images.
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
# The kind suite's dockerd runs runc through a wrapper that edits OCI specs with jq.
command -v jq >/dev/null 2>&1 || missing+=(jq)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: need root to apt-get install ${missing[*]}; install them and rerun" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The packages may start a system Redis and coturn; the tests start their own on free ports.
  if command -v systemctl >/dev/null 2>&1; then systemctl stop redis-server coturn janus >/dev/null 2>&1 || true; fi
fi
if ! docker info >/dev/null 2>&1 && command -v dockerd >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  say "starting dockerd for the image test"
  cache_dir=${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}
  mkdir -p "$cache_dir"
  (dockerd >"$cache_dir/dockerd.log" 2>&1 &)
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || echo "dockerd did not start (see $cache_dir/dockerd.log); the image test will fail" >&2
fi
command -v go >/dev/null 2>&1 || { echo "tests/run.sh: Go is needed to build the test control plane" >&2; exit 1; }
# PyJWT mints tokens independently of our code for the signaling cross-check; websockets is
# the conformance suite's client (tests/conformance/, a client written from the docs alone).
if ! python3 -c "import jwt, cryptography, websockets" >/dev/null 2>&1; then
  say "installing PyJWT and websockets for the token cross-check and the conformance suite"
  python3 -m pip install --quiet --disable-pip-version-check pyjwt cryptography websockets
fi

say "control plane (etcd, kube-apiserver, kubectl)"
cp_start=$(date +%s)
SWITCHBOARD_CONTROLPLANE_DIR=$(bash tests/controlplane/build.sh | tail -n 1)
export SWITCHBOARD_CONTROLPLANE_DIR
echo "ready in $(( $(date +%s) - cp_start ))s: $SWITCHBOARD_CONTROLPLANE_DIR"

say "chart tools (helm, kubeconform)"
tools_start=$(date +%s)
SWITCHBOARD_CHART_TOOLS_DIR=$(bash tests/tools/build.sh | tail -n 1)
export SWITCHBOARD_CHART_TOOLS_DIR
echo "ready in $(( $(date +%s) - tools_start ))s: $SWITCHBOARD_CHART_TOOLS_DIR"

say "benchmark peers (Centrifugo, socket.io) for the peer-bench smoke test"
peers_start=$(date +%s)
SWITCHBOARD_PEERS_DIR=$(bash tests/bench/peers/build.sh | tail -n 1)
export SWITCHBOARD_PEERS_DIR
echo "ready in $(( $(date +%s) - peers_start ))s: $SWITCHBOARD_PEERS_DIR"

# One-off builds gain nothing from incremental compilation, and its caches take gigabytes.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

say "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

say "tests"
# The binaries the tests run as processes, built once with the workspace's features.
cargo build --workspace --bins --locked --quiet
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Everything this script installed is required: a suite whose prerequisite is still missing
# fails instead of skipping (tests/src/prerequisites.rs).
export SWITCHBOARD_REQUIRE_ALL=1
set +e
# --no-fail-fast: one failing test binary must not hide the results of the others.
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# Coverage-guided fuzzing of frames, messages and join tokens, 20 s per target
# (tests/fuzz.sh installs cargo-fuzz itself). A crash fails the run like a failed test.
say "fuzzing (tests/fuzz.sh)"
set +e
bash tests/fuzz.sh 2>&1 | tee -a "$log"
fuzz_status=${PIPESTATUS[0]}
set -e
if [ "$fuzz_status" -ne 0 ] && [ "$status" -eq 0 ]; then status=$fuzz_status; fi

# --- kind suite ---------------------------------------------------------------------------
# tests/e2e/kind.sh: the chart on a kind cluster, offline. It builds and caches the node image
# (tests/e2e/node/build.sh), starts a dockerd of its own in a network namespace
# (tests/e2e/dockerd/start.sh, stopped below), and runs the e2e binary's #[ignore]d tests,
# printing their result lines as `kind test result:`. When it cannot run here it says so and
# prints `switchboard-kind: skipped N tests: <why>`; those tests stay counted as skipped.
say "kind suite (tests/e2e/kind.sh)"
set +e
bash tests/e2e/kind.sh 2>&1 | tee -a "$log"
kind_status=${PIPESTATUS[0]}
bash tests/e2e/dockerd/start.sh stop >/dev/null 2>&1
set -e
if [ "$kind_status" -ne 0 ] && [ "$status" -eq 0 ]; then status=$kind_status; fi
# --- end of the kind suite ----------------------------------------------------------------

# One closing line for the whole run, summed over every test binary. A test skipped by its
# prerequisite gate reports "ok" to the test harness, so it is taken out of "passed" and counted
# as skipped; ignored tests count as skipped too, except the kind suite's when kind.sh ran them.
awk '/^(kind )?test result:/ { for (i = 1; i <= NF; i++) {
         if ($i ~ /^passed;?$/) { p += $(i-1); if ($1 == "kind") k += $(i-1) }
         if ($i ~ /^failed;?$/) { f += $(i-1); if ($1 == "kind") k += $(i-1) }
         if ($i ~ /^ignored;?$/ && $1 != "kind") ig += $(i-1) } }
     /switchboard: skipped / { s++ }
     /^switchboard-kind: skipped/ { print }
     END { printf "\nswitchboard: %d passed, %d failed, %d skipped\n", p - s, f, s + ig - k }' "$log"
# Test binaries that failed, including any that died before printing a result line.
sed -n '/^error: [0-9]* targets\{0,1\} failed:/,$p' "$log" >&2
if [ "$status" -ne 0 ]; then
  echo "tests failed after $(( $(date +%s) - started ))s" >&2
  exit "$status"
fi
echo "all tests passed in $(( $(date +%s) - started ))s"
