#!/usr/bin/env bash
# The end-to-end suite on a kind cluster, run the way a user runs Switchboard, fully offline:
#
#   1. the node image (tests/e2e/node/build.sh) and the images (tests/e2e/local-images.sh:
#      operator, signaling, and a Debian image with redis-server and wget for Redis and
#      `helm test`), all built here and cached;
#   2. a Docker daemon for kind in its own network namespace (tests/e2e/dockerd/start.sh);
#   3. inside that namespace: `kind create cluster`, `kind load image-archive`, Redis, the
#      Secrets and `helm install` with the README's values (plus the local images), `helm test`,
#      then the end-to-end binary (tests/e2e/kind.rs, its tests are #[ignore]d elsewhere) with
#      `--ignored` against the cluster.
#
# Its `cargo test` result lines are printed as `kind test result: ...` so tests/run.sh counts
# them once. When it cannot run here (not root, no dockerd, no debootstrap) it says so loudly,
# prints `switchboard-kind: skipped N tests: <why>` and exits 0: skipped, never passed.
#
# KIND_CLUSTER (default switchboard-e2e) names the cluster; KEEP_CLUSTER=1 keeps it afterwards.
# Stage timings are printed as `kind stage <name>: <seconds>s`.
set -euo pipefail
cd "$(dirname "$0")/../.."
cluster=${KIND_CLUSTER:-switchboard-e2e}
ns=switchboard
release=sb
netns=${SWITCHBOARD_KIND_NETNS:-switchboard-kind}
say() { printf '\n==> %s\n' "$*"; }
tests=$(grep -c '^#\[ignore' tests/e2e/kind.rs)
skip() {
  printf '\n%s\n!!! KIND SUITE SKIPPED: %s\n%s\n' "$(printf '!%.0s' $(seq 70))" "$*" "$(printf '!%.0s' $(seq 70))" >&2
  echo "switchboard-kind: skipped $tests tests: $*"
  exit 0
}
stage_start=$(date +%s)
stage() { # prints how long the stage that just ended took
  local now; now=$(date +%s)
  echo "kind stage $1: $((now - stage_start))s"
  stage_start=$now
}

if [ "${1:-}" != --inside ]; then
  [ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, a network namespace, its own dockerd)"
  for tool in dockerd docker debootstrap nsenter ip jq go cargo; do
    command -v "$tool" >/dev/null 2>&1 || skip "$tool is missing"
  done
  docker info >/dev/null 2>&1 || skip "no Docker daemon answers for the image builds (DOCKER_HOST=${DOCKER_HOST:-default})"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT

  say "Docker daemon for kind (network namespace $netns)"
  kind_docker=$(bash tests/e2e/dockerd/start.sh | tail -n 1)
  stage dockerd

  say "node image"
  DOCKER_HOST=$kind_docker bash tests/e2e/node/build.sh >"$work/node"
  node_image=$(sed -n 1p "$work/node")
  kind_dir=$(sed -n 2p "$work/node")
  controlplane=$(sed -n 3p "$work/node")
  stage node-image
  tools=$(bash tests/tools/build.sh | tail -n 1)

  say "images (operator, signaling, Redis and helm test)"
  WITH_E2E_TOOLS=1 bash tests/e2e/local-images.sh >"$work/images"
  read -r -a images <"$work/images"
  docker save "${images[@]}" -o "$work/images.tar"
  stage images

  # The rest runs in the namespace, where kind's node and its published ports live.
  nsenter --net="/var/run/netns/$netns" env \
    DOCKER_HOST="$kind_docker" PATH="$kind_dir:$controlplane:$tools:$PATH" \
    SWITCHBOARD_KIND_NODE_IMAGE="$node_image" SWITCHBOARD_KIND_IMAGES="$work/images.tar" \
    SWITCHBOARD_KIND_IMAGE_NAMES="${images[*]}" \
    bash "$0" --inside
  exit $?
fi

# --- inside the network namespace -------------------------------------------------------
kubeconfig=$(mktemp)
forward_pid=
cleanup() {
  if [ -n "$forward_pid" ]; then kill "$forward_pid" 2>/dev/null || true; fi
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then kind delete cluster --name "$cluster" >/dev/null 2>&1 || true; fi
  rm -f "$kubeconfig"
}
trap cleanup EXIT
read -r operator_image signaling_image tools_image <<<"$SWITCHBOARD_KIND_IMAGE_NAMES"

say "kind cluster $cluster ($SWITCHBOARD_KIND_NODE_IMAGE)"
kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
kind create cluster --name "$cluster" --image "$SWITCHBOARD_KIND_NODE_IMAGE" \
  --config tests/e2e/node/cluster.yaml --kubeconfig "$kubeconfig" --wait 180s
export KUBECONFIG=$kubeconfig
kubectl -n kube-system rollout status deployment/coredns --timeout=180s
stage cluster-create

say "images into the cluster"
kind load image-archive --name "$cluster" "$SWITCHBOARD_KIND_IMAGES"
stage image-load

# Clients reach the signaling Service the way a machine on the cluster's network does: the
# Service range is routed through the node, where kube-proxy spreads connections over pods.
node_ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$cluster-control-plane")
ip route replace 10.96.0.0/16 via "$node_ip"

say "Redis and the chart (README's values)"
kubectl create namespace "$ns"
kubectl label namespace "$ns" pod-security.kubernetes.io/enforce=restricted
sed "s|image: REDIS_IMAGE|image: $tools_image|" tests/e2e/redis.yaml | kubectl -n "$ns" apply -f -
kubectl -n "$ns" rollout status deployment/redis --timeout=180s
jwt_key="app=switchboard-e2e-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
kubectl -n "$ns" create secret generic switchboard-redis --from-literal=redis-url=redis://redis:6379/0
kubectl -n "$ns" create secret generic switchboard-jwt --from-literal=jwt-hs256="$jwt_key"
helm install "$release" charts/switchboard --namespace "$ns" \
  -f tests/e2e/values.yaml \
  --set "operator.image.repository=${operator_image%:*}" --set "operator.image.tag=${operator_image##*:}" \
  --set "signaling.image.repository=${signaling_image%:*}" --set "signaling.image.tag=${signaling_image##*:}" \
  --set "helmTest.image=$tools_image" \
  --wait --timeout 5m
stage helm-install
helm test "$release" --namespace "$ns" --timeout 2m
stage helm-test

say "end-to-end tests"
set +e
SWITCHBOARD_E2E_KUBECONFIG=$kubeconfig \
SWITCHBOARD_E2E_NAMESPACE=$ns \
SWITCHBOARD_E2E_RELEASE=$release \
SWITCHBOARD_E2E_SIGNALING_URL="ws://$(kubectl -n "$ns" get svc "$release-switchboard-signaling" -o jsonpath='{.spec.clusterIP}'):80/v1/ws" \
SWITCHBOARD_E2E_JWT_HS256=$jwt_key \
  cargo test --locked -p switchboard-tests --test e2e_kind -- --ignored --test-threads=1 --nocapture 2>&1 |
  sed -u 's/^test result:/kind test result:/'
status=${PIPESTATUS[0]}
set -e
stage e2e-tests
if [ "$status" -ne 0 ]; then
  # What a failure needs to be understood after the cluster is gone: the pods, the events and
  # the last lines of every Switchboard container, including ones that were replaced.
  say "the cluster after the failure"
  kubectl -n "$ns" get pods -o wide || true
  kubectl -n "$ns" get events --sort-by=.lastTimestamp | tail -n 40 || true
  kubectl -n "$ns" get lease -o wide || true
  for pod in $(kubectl -n "$ns" get pods -l "app.kubernetes.io/instance=$release" -o name); do
    echo "--- $pod"
    kubectl -n "$ns" logs "$pod" --all-containers --tail=60 --prefix || true
  done
fi
exit "$status"
