#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kubectl) from the Go modules pinned in
# go.mod and caches the binaries outside the checkout, keyed by version, so a warm machine
# never rebuilds them. Prints the directory holding the binaries on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
k8s_version=$(awk '$1 == "k8s.io/kubernetes" {print $2; exit}' "$here/go.mod")
if [ -z "$k8s_version" ]; then
  k8s_version=$(awk '/k8s.io\/kubernetes v/ {print $NF; exit}' "$here/go.mod")
fi
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2; exit}' "$here/go.mod")
if [ -z "$etcd_version" ]; then
  etcd_version=$(awk '/go.etcd.io\/etcd\/server\/v3 v/ {print $NF; exit}' "$here/go.mod")
fi
cache=${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}
out="$cache/controlplane-k8s-$k8s_version-etcd-$etcd_version"
if [ -x "$out/kube-apiserver" ] && [ -x "$out/kubectl" ] && [ -x "$out/etcd" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out.tmp"
cd "$here"
start=$(date +%s)
# -trimpath and no VCS stamping keep the build independent of where the checkout lives.
export CGO_ENABLED=0
# Stamp the release into the binaries, as the upstream release build does, so that
# `kubectl version` and the apiserver's /version report the real version.
minor=${k8s_version#v1.}; minor=${minor%%.*}
ldflags="-X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
go build -trimpath -ldflags "$ldflags" -o "$out.tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver >&2
go build -trimpath -ldflags "$ldflags" -o "$out.tmp/kubectl" k8s.io/kubernetes/cmd/kubectl >&2
go build -trimpath -o "$out.tmp/etcd" ./etcd >&2
rm -rf "$out" && mv "$out.tmp" "$out"
echo "control plane built in $(( $(date +%s) - start ))s" >&2
echo "$out"
