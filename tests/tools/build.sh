#!/usr/bin/env bash
# Builds the chart tools (helm, kubeconform) from the Go modules pinned in go.mod and caches
# the binaries outside the checkout, keyed by version, so a warm machine never rebuilds them.
# Prints the directory holding the binaries on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version_of() {
  awk -v m="$1" '$1 == m {print $2; exit} $1 == "require" && $2 == m {print $3; exit}' "$here/go.mod"
}
helm_version=$(version_of helm.sh/helm/v4)
kubeconform_version=$(version_of github.com/yannh/kubeconform)
if [ -z "$helm_version" ] || [ -z "$kubeconform_version" ]; then
  echo "tests/tools/build.sh: cannot read the helm and kubeconform versions from go.mod" >&2
  exit 1
fi
cache=${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}
out="$cache/tools-helm-$helm_version-kubeconform-$kubeconform_version"
if [ -x "$out/helm" ] && [ -x "$out/kubeconform" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out.tmp"
cd "$here"
start=$(date +%s)
# -trimpath and no VCS stamping keep the build independent of where the checkout lives.
export CGO_ENABLED=0
# Stamp the release into helm, as its release build does, so `helm version` tells the truth.
go build -trimpath -ldflags "-X helm.sh/helm/v4/internal/version.version=$helm_version" \
  -o "$out.tmp/helm" helm.sh/helm/v4/cmd/helm >&2
go build -trimpath -ldflags "-X main.version=$kubeconform_version" \
  -o "$out.tmp/kubeconform" github.com/yannh/kubeconform/cmd/kubeconform >&2
rm -rf "$out" && mv "$out.tmp" "$out"
echo "chart tools built in $(( $(date +%s) - start ))s" >&2
echo "$out"
