#!/usr/bin/env bash
# Builds the operator and signaling images (the root Dockerfile's two targets) on a machine
# without a container registry: the base images are made locally (Debian bookworm by
# debootstrap, brought in with `docker import`) and passed as BUILDER_IMAGE and RUNTIME_IMAGE.
#
#   switchboard-local/runtime:bookworm-ca  minbase Debian (glibc, libgcc, CA certificates): the
#                                        run stage
#   switchboard-local/rust:<rustc>       minbase Debian + gcc + this machine's Rust toolchain
#   switchboard-local/builder:<rustc>-<lock>  that + the crates Cargo.lock names, from this
#                                        machine's cargo cache (the build runs offline)
#
#   switchboard-local/e2e-tools:bookworm  with WITH_E2E_TOOLS=1: minbase Debian + redis-server
#                                        and wget, the kind suite's Redis and `helm test` image
#
# Bases are built once and kept (the builder again when Cargo.lock changes, replacing the old
# one); the images are tagged switchboard/{operator,signaling}:local.
# Needs root (debootstrap), a running dockerd, rustc and cargo. CARGO_PROFILE (default dev)
# picks the build profile inside the image.
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=${CARGO_PROFILE:-dev}
say() { printf '==> %s\n' "$*" >&2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

# A minbase root filesystem with `include` extra packages, imported as `tag`, without docs.
import_debian() {
  local tag=$1 include=$2 root="$work/root"
  say "debootstrap $tag"
  debootstrap --variant=minbase ${include:+--include=$include} bookworm "$root" "$mirror" >&2
  rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/var/cache/apt/archives/*.deb
  if [ -n "${extra:-}" ]; then "$extra" "$root"; fi
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV CARGO_NET_OFFLINE=true' \
    --change 'ENV CARGO_INCREMENTAL=0' \
    - "$tag" >&2
  rm -rf "$root"
}

# This machine's Rust toolchain.
add_rust() {
  local root=$1 sysroot
  sysroot=$(rustc --print sysroot)
  mkdir -p "$root/usr/local/rust/lib/rustlib"
  cp -a "$sysroot/bin" "$root/usr/local/rust/"
  cp -a "$sysroot"/lib/*.so* "$root/usr/local/rust/lib/"
  cp -a "$sysroot/lib/rustlib/x86_64-unknown-linux-gnu" "$root/usr/local/rust/lib/rustlib/"
}

rustc_version=$(rustc -V | awk '{print $2}')
runtime=switchboard-local/runtime:bookworm-ca
toolchain="switchboard-local/rust:$rustc_version"
builder="switchboard-local/builder:$rustc_version-$(sha256sum Cargo.lock | cut -c1-12)"
if ! docker image inspect "$runtime" >/dev/null 2>&1; then
  extra= import_debian "$runtime" "ca-certificates"
fi
if ! docker image inspect "$toolchain" >/dev/null 2>&1; then
  extra=add_rust import_debian "$toolchain" "gcc,libc6-dev"
fi
if ! docker image inspect "$builder" >/dev/null 2>&1; then
  say "crates for $builder"
  # Every crate Cargo.lock names, from crates.io into this machine's cache if missing.
  cargo fetch --locked >&2
  cargo_home=${CARGO_HOME:-$HOME/.cargo}
  mkdir -p "$work/crates/registry"
  cp -a "$cargo_home/registry/index" "$cargo_home/registry/cache" "$work/crates/registry/"
  printf 'FROM %s\nCOPY registry /usr/local/cargo/registry\n' "$toolchain" >"$work/crates/Dockerfile"
  docker build -q -t "$builder" "$work/crates" >&2
  rm -rf "$work/crates"
  docker images --format '{{.Repository}}:{{.Tag}}' switchboard-local/builder |
    grep -vx "$builder" | xargs -r docker rmi >&2 || true
fi
# What the images are built from: a warm run whose sources did not change skips the build (the
# intermediate stages are pruned below, so Docker's own cache would not).
source=$( (echo "$profile $builder $runtime"; git ls-files -z -- Dockerfile Cargo.toml Cargo.lock crds operator signaling tests/Cargo.toml |
  xargs -0 sha256sum) | sha256sum | cut -c1-16)
for component in operator signaling; do
  if [ "$(docker image inspect -f '{{index .Config.Labels "dev.switchboard.source"}}' "switchboard/$component:local" 2>/dev/null)" = "$source" ]; then
    say "switchboard/$component:local is up to date ($source)"
    continue
  fi
  say "docker build $component ($profile)"
  docker build -q --target "$component" --label "dev.switchboard.source=$source" \
    --build-arg "BUILDER_IMAGE=$builder" --build-arg "RUNTIME_IMAGE=$runtime" \
    --build-arg "CARGO_PROFILE=$profile" -t "switchboard/$component:local" . >&2
done
# Intermediate build stages are not kept: they hold a whole target directory.
docker image prune -f >/dev/null
tools=switchboard-local/e2e-tools:bookworm
if [ "${WITH_E2E_TOOLS:-0}" = 1 ] && ! docker image inspect "$tools" >/dev/null 2>&1; then
  extra= import_debian "$tools" "redis-server,wget"
fi
if [ "${WITH_E2E_TOOLS:-0}" = 1 ]; then
  echo "switchboard/operator:local switchboard/signaling:local $tools"
else
  echo "switchboard/operator:local switchboard/signaling:local"
fi
