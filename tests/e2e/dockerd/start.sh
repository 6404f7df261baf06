#!/usr/bin/env bash
# Starts the Docker daemon the kind suite uses, or finds it already running, and prints its
# DOCKER_HOST on the last line. It is kept apart from the host and from the other tests:
#
#   - it lives in its own network namespace (`ip netns` NAME, default switchboard-kind), so
#     the bridges and iptables rules kind and Docker create never touch the host's; kubectl,
#     helm and the end-to-end binary run in that namespace too (`nsenter --net=...`).
#     `ip netns exec` is not used for dockerd: it remounts /sys, which breaks dockerd;
#   - its socket, state and images are its own (`$SWITCHBOARD_CACHE/kind-docker`, kept between
#     runs so the node image stays warm), not the host daemon's;
#   - its default runtime is runc-wrapper (next to this script), because kind's `--privileged`
#     node container asks for a capability this host cannot grant.
#
# `start.sh stop` stops it. Needs root, dockerd, runc, jq and iproute2.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
netns=${SWITCHBOARD_KIND_NETNS:-switchboard-kind}
cache=${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}
run=/run/switchboard-kind-docker
sock="$run/docker.sock"
export DOCKER_HOST="unix://$sock"

if [ "${1:-}" = stop ]; then
  if [ -f "$run/dockerd.pid" ]; then
    pid=$(cat "$run/dockerd.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
  ip netns delete "$netns" 2>/dev/null || true
  exit 0
fi

if docker info >/dev/null 2>&1; then
  echo "$DOCKER_HOST"
  exit 0
fi
if ! ip netns list | grep -qw "$netns"; then
  ip netns add "$netns"
fi
ip -n "$netns" link set lo up
mkdir -p "$run" "$cache/kind-docker"
nsenter --net="/var/run/netns/$netns" dockerd \
  --host "$DOCKER_HOST" \
  --data-root "$cache/kind-docker" \
  --exec-root "$run/exec" \
  --pidfile "$run/dockerd.pid" \
  --add-runtime "switchboard-runc=$here/runc-wrapper" \
  --default-runtime switchboard-runc \
  >"$cache/kind-dockerd.log" 2>&1 &
for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
if ! docker info >/dev/null 2>&1; then
  echo "tests/e2e/dockerd/start.sh: dockerd did not start; see $cache/kind-dockerd.log" >&2
  tail -n 20 "$cache/kind-dockerd.log" >&2
  exit 1
fi
echo "$DOCKER_HOST"
