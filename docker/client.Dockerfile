# syntax=docker/dockerfile:1
#
# The loadgen-client image (the MLPerf LoadGen driving KServe v2 servers), for linux/amd64 and
# linux/arm64. Build it from the repository root:
#
#   docker buildx build -f docker/client.Dockerfile --platform linux/amd64,linux/arm64 \
#       -t loadgen-client:0.1.0 .
#
# and run it with the arguments of loadgen-client; the mlperf_log_* files go to /work/output
# (mount a volume or a folder there to keep them):
#
#   docker run --rm -v "$PWD/output:/work/output" loadgen-client:0.1.0 \
#       --endpoint http://BOX:8001 --profile digits-cnn --scenario SingleStream --time 10
#
# The labelled digits images (models/data/digits-val) are in the image at
# /usr/share/loadgen-client/digits-val, for --dataset imagenet --dataset-path there.
#
# As in server.Dockerfile, the binary is cross-compiled on the build machine's architecture and
# the final stage has no RUN, so neither architecture needs emulation to build.
ARG RUST_VERSION=1.95.0
ARG DEBIAN_IMAGE=debian:bookworm-slim
ARG VERSION=0.1.0

FROM --platform=$BUILDPLATFORM rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
ARG BUILDARCH
ENV CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=x86_64-linux-gnu-gcc \
    CC_x86_64_unknown_linux_gnu=x86_64-linux-gnu-gcc \
    AR_x86_64_unknown_linux_gnu=x86_64-linux-gnu-ar
RUN set -eu; \
    case "$TARGETARCH" in \
        amd64) triple=x86_64-unknown-linux-gnu cross="gcc-x86-64-linux-gnu libc6-dev-amd64-cross" ;; \
        arm64) triple=aarch64-unknown-linux-gnu cross="gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;; \
        *) echo "TARGETARCH=$TARGETARCH: this image is built for amd64 and arm64" >&2; exit 1 ;; \
    esac; \
    if [ "$TARGETARCH" != "$BUILDARCH" ]; then \
        apt-get update; \
        apt-get install -y --no-install-recommends $cross; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    rustup target add "$triple"; \
    echo "$triple" >/etc/rust-target
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY server server
COPY loadgen loadgen
COPY loadgen-client loadgen-client
RUN --mount=type=cache,id=inference-server-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=loadgen-client-target,target=/src/target,sharing=locked \
    set -eu; \
    triple=$(cat /etc/rust-target); \
    cargo build --release --locked -p loadgen-client --target "$triple"; \
    install -D -m 0755 "target/$triple/release/loadgen-client" /out/loadgen-client

FROM --platform=$BUILDPLATFORM ${DEBIAN_IMAGE} AS users
# A user of its own (the server's is 10001) and the folder the logs are written to, its own.
RUN groupadd --gid 10002 loadgen \
    && useradd --uid 10002 --gid 10002 --no-create-home --home-dir /work \
        --shell /usr/sbin/nologin --comment "loadgen-client" loadgen \
    && install -d -m 0755 -o 10002 -g 10002 /work/output

FROM ${DEBIAN_IMAGE}
ARG DEBIAN_IMAGE
ARG VERSION
LABEL org.opencontainers.image.title="loadgen-client" \
      org.opencontainers.image.description="MLPerf LoadGen 6.0.17 reimplementation driving KServe v2 inference servers over gRPC" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${DEBIAN_IMAGE}"
COPY --from=users /etc/passwd /etc/group /etc/shadow /etc/gshadow /etc/
COPY --from=build /out/loadgen-client /usr/local/bin/loadgen-client
COPY models/data/digits-val /usr/share/loadgen-client/digits-val
COPY --from=users --chown=10002:10002 /work /work
WORKDIR /work
USER 10002:10002
ENTRYPOINT ["/usr/local/bin/loadgen-client"]
CMD ["--help"]
