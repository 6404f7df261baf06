#!/usr/bin/env bash
# The end-to-end suite on a kind cluster, for a machine with Docker, kind, kubectl, helm, cargo
# and access to a container registry (kind pulls its node image, and Redis comes from a public
# image). It creates a cluster, builds both images from their Dockerfiles and loads them into
# it, installs Redis and the chart, runs `helm test`, then the end-to-end test binary
# (tests/e2e/kind.rs) against the cluster.
#
# The project's development and CI machines have no registry, so this cannot run there; on
# them `bash tests/run.sh` runs the chart against a real kube-apiserver with the binaries as
# local processes instead (tests/tests/chart_install.rs).
#
# KIND_CLUSTER (default switchboard-e2e) names the cluster; KEEP_CLUSTER=1 keeps it afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."
cluster=${KIND_CLUSTER:-switchboard-e2e}
ns=switchboard
release=sb
for tool in docker kind kubectl helm cargo; do
  command -v "$tool" >/dev/null 2>&1 || { echo "tests/e2e/kind.sh: $tool is needed" >&2; exit 1; }
done
say() { printf '\n==> %s\n' "$*"; }
kubeconfig=$(mktemp)
forward_pid=
cleanup() {
  if [ -n "$forward_pid" ]; then kill "$forward_pid" 2>/dev/null || true; fi
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then kind delete cluster --name "$cluster" >/dev/null 2>&1 || true; fi
  rm -f "$kubeconfig"
}
trap cleanup EXIT

say "kind cluster $cluster"
if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  kind create cluster --name "$cluster" --wait 180s
fi
kind get kubeconfig --name "$cluster" >"$kubeconfig"
export KUBECONFIG=$kubeconfig

say "images"
docker build -f operator/Dockerfile -t switchboard/operator:e2e .
docker build -f signaling/Dockerfile -t switchboard/signaling:e2e .
kind load docker-image --name "$cluster" switchboard/operator:e2e switchboard/signaling:e2e

say "Redis and the chart"
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$ns" --overwrite pod-security.kubernetes.io/enforce=restricted
kubectl -n "$ns" apply -f tests/e2e/redis.yaml
kubectl -n "$ns" rollout status deployment/redis --timeout=180s
helm upgrade --install "$release" charts/switchboard --namespace "$ns" \
  -f tests/e2e/values.yaml --wait --timeout 5m
helm test "$release" --namespace "$ns" --timeout 2m

say "end-to-end tests"
port=18443
kubectl -n "$ns" port-forward "svc/$release-switchboard-signaling" "$port:80" >/dev/null &
forward_pid=$!
for _ in $(seq 50); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.2
done
SWITCHBOARD_E2E_KUBECONFIG=$kubeconfig \
SWITCHBOARD_E2E_NAMESPACE=$ns \
SWITCHBOARD_E2E_RELEASE=$release \
SWITCHBOARD_E2E_SIGNALING_URL="ws://127.0.0.1:$port/v1/ws" \
SWITCHBOARD_E2E_JWT_HS256=$(awk -F': ' '$1 == "  hs256" {print $2}' tests/e2e/values.yaml) \
  cargo test -p switchboard-tests --test e2e_kind -- --nocapture
