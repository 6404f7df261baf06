#!/usr/bin/env bash
# Builds the benchmark peers and caches them outside the checkout, keyed by version, so a warm
# machine never rebuilds them: Centrifugo from the Go module pinned in centrifugo/go.mod, and
# the socket.io server's node_modules from socketio/package.json (exact versions). Prints the
# directory holding `centrifugo` and `socketio/` on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cf_version=$(awk '$1 == "github.com/centrifugal/centrifugo/v6" {print $2; exit}' "$here/centrifugo/go.mod")
if [ -z "$cf_version" ]; then
  echo "build.sh: no github.com/centrifugal/centrifugo/v6 version in centrifugo/go.mod" >&2
  exit 1
fi
# The npm side is keyed by a hash of its files, so an edit rebuilds it.
js_key=$(cat "$here/socketio/package.json" "$here/socketio/package-lock.json" "$here/socketio/server.js" | sha256sum | cut -c1-12)
cache=${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}
out="$cache/peers-centrifugo-$cf_version-socketio-$js_key"
if [ -x "$out/centrifugo" ] && [ -f "$out/socketio/node_modules/socket.io/package.json" ]; then
  echo "$out"
  exit 0
fi
rm -rf "$out.tmp"
mkdir -p "$out.tmp/socketio"
start=$(date +%s)
# Reuse a Centrifugo built for another socket.io key.
prior=$(ls -d "$cache"/peers-centrifugo-"$cf_version"-socketio-*/centrifugo 2>/dev/null | head -n 1 || true)
if [ -n "$prior" ]; then
  cp "$prior" "$out.tmp/centrifugo"
else
  (cd "$here/centrifugo" && CGO_ENABLED=0 go build -trimpath -ldflags "-X github.com/centrifugal/centrifugo/v6/internal/build.Version=${cf_version#v}" -o "$out.tmp/centrifugo" github.com/centrifugal/centrifugo/v6 >&2)
fi
cp "$here/socketio/package.json" "$here/socketio/package-lock.json" "$here/socketio/server.js" "$out.tmp/socketio/"
# npm ci installs exactly what package-lock.json names, transitive packages included.
(cd "$out.tmp/socketio" && npm ci --no-audit --no-fund --loglevel=error --omit=dev >&2)
rm -rf "$out" && mv "$out.tmp" "$out"
echo "peers built in $(( $(date +%s) - start ))s" >&2
echo "$out"
