# Switchboard's two images from one build: `--target operator` and `--target signaling`, both
# compiled in one Rust stage (the crates they share are built once) and run from a minimal
# non-root image. Build from the repository root:
#
#   docker build --target operator -t switchboard/operator:dev .
#   docker build --target signaling -t switchboard/signaling:dev .
#
# Both base images are build arguments, so a machine without a registry can build from local
# images (tests/e2e/local-images.sh makes Debian ones with debootstrap). The runtime image must
# provide glibc, libgcc and CA certificates: the operator's HTTP client loads the system roots
# when it starts and refuses to start without them.
ARG BUILDER_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
# `dev` for a quick debug build; `release` for anything real.
ARG CARGO_PROFILE=release
# Dependencies first, in a layer that survives source changes: the workspace's manifests with
# empty sources, built once per Cargo.lock.
COPY Cargo.toml Cargo.lock ./
COPY crds/Cargo.toml crds/
COPY operator/Cargo.toml operator/
COPY crds/placement/Cargo.toml crds/placement/
COPY crds/sfu/Cargo.toml crds/sfu/
COPY crds/telemetry/Cargo.toml crds/telemetry/
COPY crds/turn/Cargo.toml crds/turn/
COPY signaling/Cargo.toml signaling/
COPY tests/Cargo.toml tests/
COPY tests/bench/Cargo.toml tests/bench/
RUN for crate in crds crds/placement crds/sfu crds/telemetry crds/turn operator signaling tests tests/bench; do \
      mkdir -p "$crate/src" && : > "$crate/src/lib.rs"; \
    done \
 && mkdir -p tests/e2e && : > tests/e2e/kind.rs \
 && echo 'fn main() {}' > operator/src/main.rs \
 && echo 'fn main() {}' > signaling/src/main.rs \
 && cargo build --locked --profile "$CARGO_PROFILE" \
      -p switchboard-operator --bin switchboard-operator \
      -p switchboard-signaling --bin switchboard-signaling
COPY . .
# COPY keeps the sources' own modification times, which may be older than the stubs'.
RUN find crds operator signaling tests -name '*.rs' -exec touch {} + \
 && cargo build --locked --profile "$CARGO_PROFILE" \
      -p switchboard-operator --bin switchboard-operator \
      -p switchboard-signaling --bin switchboard-signaling \
 && dir=$(if [ "$CARGO_PROFILE" = dev ]; then echo debug; else echo "$CARGO_PROFILE"; fi) \
 && install -D -m 0755 "target/$dir/switchboard-operator" /out/switchboard-operator \
 && install -D -m 0755 "target/$dir/switchboard-signaling" /out/switchboard-signaling

FROM ${RUNTIME_IMAGE} AS operator
COPY --from=build /out/switchboard-operator /usr/local/bin/switchboard-operator
# The distroless "nonroot" user; numeric so that runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/switchboard-operator"]

FROM ${RUNTIME_IMAGE} AS signaling
COPY --from=build /out/switchboard-signaling /usr/local/bin/switchboard-signaling
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/switchboard-signaling"]
CMD ["serve"]
