#!/usr/bin/env bash
# Builds kind's node image without a registry, the way `kind build node-image` assembles one,
# and caches it. `kind build node-image` itself pulls its base image and its component images,
# so every piece is made here instead:
#
#   - kubeadm, kubelet, kube-controller-manager, kube-scheduler and kube-proxy from the Go
#     module set of tests/controlplane (etcd, kube-apiserver and kubectl come from its build.sh),
#     with the same version stamps; kind from the Go module proxy; CoreDNS from ./coredns (a
#     main with only the plugins the cluster's Corefile uses, version pinned in its go.mod);
#     pause compiled with `gcc -static` from the kubernetes module's build/pause/linux/pause.c;
#   - the node's root filesystem: Debian bookworm by debootstrap with systemd, containerd, runc
#     and the CNI plugins from Debian, plus kind's own base files (entrypoint, units, containerd
#     config) from the kind module's images/base/files;
#   - the component images kubeadm asks for (`kubeadm config images list`), one binary each
#     (kube-proxy on a minbase Debian with iptables), written as image archives and imported
#     into the node's containerd content store, pinned, by a containerd run on this machine.
#
# Needs root (debootstrap, containerd), Go, gcc, jq, ctr and a running dockerd (DOCKER_HOST is
# honoured). Everything is keyed by a hash of its inputs (this directory, the Go module set, the
# versions below): a warm run only checks that the image exists. Prints three lines: the node
# image, the directory holding `kind`, and the directory holding kubectl.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
kind_version=v0.33.0
coredns_version=$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" { print $3 }' "$here/coredns/go.mod")
say() { printf '==> %s\n' "$*" >&2; }

controlplane=$(bash "$repo/tests/controlplane/build.sh" | tail -n 1)
k8s_version=$(basename "$controlplane" | sed -E 's/^controlplane-k8s-(v[^-]+)-etcd-.*/\1/')
key=$(cat "$0" "$here"/*.conflist "$here"/coredns/* "$repo/tests/controlplane/go.mod" "$repo/tests/controlplane/go.sum" \
  <(echo "$kind_version $coredns_version") | sha256sum | cut -c1-12)
image="switchboard-local/kind-node:$k8s_version-$key"
cache=${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}
# The binaries depend only on the Go modules and versions, so editing the image steps below
# does not rebuild them.
bin_key=$(cat "$repo/tests/controlplane/go.mod" "$repo/tests/controlplane/go.sum" "$here"/coredns/* \
  <(echo "$kind_version $coredns_version") | sha256sum | cut -c1-12)
bin="$cache/kind-node-bin-$k8s_version-$bin_key"

if [ -x "$bin/kind" ] && docker image inspect "$image" >/dev/null 2>&1; then
  printf '%s\n%s\n%s\n' "$image" "$bin" "$controlplane"
  exit 0
fi
start=$(date +%s)
work=$(mktemp -d "$cache/kind-node-work.XXXXXX")
importer=
cleanup() {
  if [ -n "$importer" ]; then kill "$importer" 2>/dev/null || true; wait "$importer" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# 1. Binaries (kept in the cache, so a rebuilt image reuses them).
if [ ! -x "$bin/kind" ]; then
  mkdir -p "$bin.tmp"
  say "Kubernetes node binaries $k8s_version"
  minor=${k8s_version#v1.}; minor=${minor%%.*}
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  (
    cd "$repo/tests/controlplane"
    export CGO_ENABLED=0
    for cmd in kubeadm kubelet kube-controller-manager kube-scheduler kube-proxy; do
      go build -trimpath -ldflags "$ldflags" -o "$bin.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd" >&2
    done
    # pause is C: the sandbox every pod's namespaces hang on.
    k8s_dir=$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)
    gcc -Os -static -DVERSION="switchboard-$k8s_version" -o "$bin.tmp/pause" "$k8s_dir/build/pause/linux/pause.c"
    strip "$bin.tmp/pause"
  )
  say "kind $kind_version and CoreDNS $coredns_version"
  CGO_ENABLED=0 GOBIN="$bin.tmp" GOFLAGS=-trimpath go install -ldflags=-s "sigs.k8s.io/kind@$kind_version" >&2
  (cd "$here/coredns" && CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$bin.tmp/coredns" .) >&2
  rm -rf "$bin" && mv "$bin.tmp" "$bin"
fi
kind_src=$(cd "$repo/tests/controlplane" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kind@$kind_version" | jq -r .Dir)

# 2. The component images, as image archives for containerd.
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
images="$work/images"
mkdir -p "$images"
# One image from a root directory: `docker import` with an entrypoint, then `docker save`.
single_image() {
  local ref=$1 root=$2 entrypoint=$3
  tar -C "$root" -c . | docker import --change "ENTRYPOINT [\"$entrypoint\"]" \
    --change 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$ref" >/dev/null
  docker save "$ref" -o "$images/$(echo "$ref" | tr '/:' '__').tar"
  docker rmi "$ref" >/dev/null
}
say "component images"
"$bin/kubeadm" config images list --kubernetes-version "$k8s_version" >"$work/wanted"
# kind's containerd config names pause 3.10 as the sandbox image; kubeadm may name a newer tag.
echo "registry.k8s.io/pause:3.10" >>"$work/wanted"
sort -u -o "$work/wanted" "$work/wanted"
while read -r ref; do
  name=${ref##*/}; name=${name%%:*}
  root="$work/img-$name"
  mkdir -p "$root/usr/local/bin" "$root/tmp" "$root/etc"
  echo 'nonroot:x:65532:65532::/home/nonroot:/sbin/nologin' >"$root/etc/passwd"
  case $name in
    kube-apiserver | kube-controller-manager | kube-scheduler)
      src="$controlplane/$name"; [ -x "$src" ] || src="$bin/$name"
      cp "$src" "$root/usr/local/bin/$name"
      single_image "$ref" "$root" "/usr/local/bin/$name" ;;
    etcd)
      cp "$controlplane/etcd" "$root/usr/local/bin/etcd"
      single_image "$ref" "$root" /usr/local/bin/etcd ;;
    coredns)
      cp "$bin/coredns" "$root/coredns"
      single_image "$ref" "$root" /coredns ;;
    pause)
      cp "$bin/pause" "$root/pause"
      single_image "$ref" "$root" /pause ;;
    kube-proxy)
      # kube-proxy programs iptables and nftables and flushes conntrack entries.
      rm -rf "$root"
      debootstrap --variant=minbase --include=iptables,nftables,conntrack bookworm "$root" "$mirror" >&2
      chroot "$root" update-alternatives --set iptables /usr/sbin/iptables-legacy >&2
      chroot "$root" update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy >&2
      rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/var/cache/apt/archives/*.deb
      cp "$bin/kube-proxy" "$root/usr/local/bin/kube-proxy"
      single_image "$ref" "$root" /usr/local/bin/kube-proxy ;;
    *)
      echo "tests/e2e/node/build.sh: kubeadm wants $ref, which this script does not build" >&2
      exit 1 ;;
  esac
  rm -rf "$root"
done <"$work/wanted"

# 3. The node's root filesystem.
say "node root filesystem (debootstrap)"
root="$work/node"
debootstrap --variant=minbase \
  --include=systemd,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,e2fsprogs,bash,ca-certificates,curl,jq,procps,containerd,runc,containernetworking-plugins \
  bookworm "$root" "$mirror" >&2
base="$kind_src/images/base/files"
install -m 0755 "$base"/usr/local/bin/* "$root/usr/local/bin/"
mkdir -p "$root/kind/bin" "$root/etc/containerd" "$root/etc/systemd/system/kubelet.service.d" "$root/LICENSES"
cp "$base/kind/README.txt" "$root/kind/" 2>/dev/null || true
install -m 0755 "$base"/kind/bin/* "$root/kind/bin/"
install -m 0644 "$base/etc/crictl.yaml" "$root/etc/"
install -m 0644 "$base"/etc/default/* "$root/etc/default/"
install -m 0644 "$base"/etc/sysctl.d/* "$root/etc/sysctl.d/"
install -m 0644 "$base"/etc/systemd/system/*.service "$base"/etc/systemd/system/*.slice "$root/etc/systemd/system/"
install -m 0644 "$base"/etc/systemd/system/kubelet.service.d/* "$root/etc/systemd/system/kubelet.service.d/"
# Inside a container on this host, containerd may not lower oom_score_adj: without this every
# sandbox fails with "can't get final child's PID from pipe".
sed 's/^  restrict_oom_score_adj = false/  restrict_oom_score_adj = true/' \
  "$base/etc/containerd/config.toml" >"$root/etc/containerd/config.toml"
grep -q 'restrict_oom_score_adj = true' "$root/etc/containerd/config.toml"
# kind's units expect containerd under /usr/local/bin and the CNI plugins under /opt/cni/bin.
ln -sf /usr/bin/containerd "$root/usr/local/bin/containerd"
mkdir -p "$root/opt/cni" "$root/etc/cni/net.d"
rm -rf "$root/opt/cni/bin"; ln -s /usr/lib/cni "$root/opt/cni/bin"
install -m 0644 "$here/10-switchboard-ptp.conflist" "$root/etc/cni/net.d/"
ctr oci spec |
  jq '.hooks.createContainer[.hooks.createContainer| length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' |
  jq 'del(.process.rlimits)' >"$root/etc/containerd/cri-base.json"
install -m 0755 "$bin/kubeadm" "$bin/kubelet" "$controlplane/kubectl" "$root/usr/bin/"
echo "$k8s_version" >"$root/kind/version"
mkdir -p "$root/etc/kubernetes/manifests"
# What kind's base image does to systemd: no services but its own.
find "$root/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
rm -f "$root"/lib/systemd/system/multi-user.target.wants/* "$root"/etc/systemd/system/*.wants/* \
  "$root"/lib/systemd/system/local-fs.target.wants/* "$root"/lib/systemd/system/sockets.target.wants/*udev* \
  "$root"/lib/systemd/system/sockets.target.wants/*initctl* "$root"/lib/systemd/system/basic.target.wants/*
echo "ReadKMsg=no" >>"$root/etc/systemd/journald.conf"
ln -sf /usr/lib/systemd/systemd "$root/sbin/init"
systemctl --root="$root" enable kubelet.service containerd.service undo-mount-hacks.service >&2
systemctl --root="$root" mask systemd-binfmt.service >&2
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/var/cache/apt/archives/*.deb

# 4. The component images into the node's containerd store, by a containerd on this machine
#    that works on the node's /var/lib/containerd (same Debian containerd as in the node).
say "importing $(wc -l <"$work/wanted") images into the node's containerd"
state="$work/containerd-state"
mkdir -p "$state" "$root/var/lib/containerd"
cat >"$work/containerd.toml" <<EOF
version = 2
root = "$root/var/lib/containerd"
state = "$state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$state/containerd.sock"
[ttrpc]
  address = "$state/containerd.sock.ttrpc"
EOF
containerd --config "$work/containerd.toml" >"$work/containerd.log" 2>&1 &
importer=$!
for _ in $(seq 100); do ctr --address "$state/containerd.sock" version >/dev/null 2>&1 && break; sleep 0.1; done
for archive in "$images"/*.tar; do
  ctr --address "$state/containerd.sock" -n k8s.io images import --no-unpack --digests "$archive" >&2
done
# kubeadm's own tags, pinned so the kubelet's image garbage collection never removes them.
ctr --address "$state/containerd.sock" -n k8s.io images ls -q | grep -v '^import-' |
  while read -r ref; do
    ctr --address "$state/containerd.sock" -n k8s.io images label "$ref" io.cri-containerd.pinned=pinned >/dev/null
  done
kill "$importer"; wait "$importer" 2>/dev/null || true; importer=
rm -rf "$root/var/lib/containerd/io.containerd.runtime.v2.task" "$root/var/lib/containerd/tmpmounts"

say "docker import $image"
tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENV container=docker' \
  --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
  - "$image-rootfs" >&2
# systemd stops on SIGRTMIN+3, not TERM; `docker import` cannot set a stop signal.
mkdir -p "$work/stop"
printf 'FROM %s\nSTOPSIGNAL SIGRTMIN+3\n' "$image-rootfs" >"$work/stop/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$image" "$work/stop" >&2
docker rmi "$image-rootfs" >/dev/null
# Older node images of this script are dead weight.
docker images --format '{{.Repository}}:{{.Tag}}' switchboard-local/kind-node | grep -vx "$image" |
  xargs -r docker rmi >&2 || true
say "node image built in $(( $(date +%s) - start ))s"
printf '%s\n%s\n%s\n' "$image" "$bin" "$controlplane"
