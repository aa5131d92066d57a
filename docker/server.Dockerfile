# syntax=docker/dockerfile:1
#
# The inference-server image, for linux/amd64 and linux/arm64. Build it from the repository root
# (the build context; .dockerignore keeps target/, the virtual environments, generated models,
# output/ and .git out of it) with BuildKit:
#
#   docker buildx build -f docker/server.Dockerfile --platform linux/amd64,linux/arm64 \
#       -t inference-server:0.1.0 .
#   docker build -f docker/server.Dockerfile -t inference-server:0.1.0 .     # this machine's arch
#
# and run it (the drain after SIGTERM takes up to shutdown_grace = 30 s, more than Docker's
# default 10 s stop timeout):
#
#   docker run --rm -p 8000-8002:8000-8002 --stop-timeout 45 \
#       -v "$PWD/models/repository:/var/lib/inference-server/models:ro" inference-server:0.1.0
#
# Stages:
#   build    cargo builds inference-server for TARGETARCH on the build machine's own architecture
#   install  deploy/install.sh --root /staging: the script, options and layout of a box install
#   users    the image's /etc/passwd and /etc/group, with the user and group inference-server 10001
#   (final)  debian:bookworm-slim with /opt/inference-server, /etc/inference-server and
#            /var/lib/inference-server from the install stage
#
# Cross-compiling rather than emulating: every stage that runs a command runs on BUILDPLATFORM,
# and the final stage (the only one on TARGETPLATFORM) has no RUN, so an arm64 image builds on an
# amd64 machine at native speed and without QEMU/binfmt (and an amd64 one on arm64). The build
# stage links with Debian's cross gcc for the target (gcc-aarch64-linux-gnu, or
# gcc-x86-64-linux-gnu on an arm64 builder); the one C dependency, zstd-sys, is compiled with it
# too. install.sh only reads the binary's ELF header and unpacks wheels, so it runs natively
# whatever TARGETARCH is. tests/deploy/test_docker.py checks this file (no engine needed).

# Rust: the toolchain the workspace is built and tested with (rust-version in Cargo.toml is the
# minimum). Debian: bookworm (glibc 2.36) for the build and the image alike, so the binary's glibc
# symbols are all there at run time; the OpenVINO arm64 wheel needs glibc >= 2.35.
ARG RUST_VERSION=1.95.0
ARG DEBIAN_IMAGE=debian:bookworm-slim
ARG VERSION=0.1.0

FROM --platform=$BUILDPLATFORM rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
ARG BUILDARCH
# Linker and C compiler per target triple (cc-rs reads CC_<triple>, AR_<triple>); on a native
# build they name the system gcc, which Debian also installs under its triple's name.
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
# The whole workspace: cargo loads every member's manifest and targets, even to build one. The
# KServe .proto files are compiled by protox (pure Rust, proto/build.rs): no protoc is needed.
# Without .git in the context, loadgen's build script records its git revision as "NA".
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY server server
COPY loadgen loadgen
COPY loadgen-client loadgen-client
# The target folder is a cache mount (kept across builds, shared by both architectures, hence
# locked), so the binary is copied out of it in the same step.
RUN --mount=type=cache,id=inference-server-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=inference-server-target,target=/src/target,sharing=locked \
    set -eu; \
    triple=$(cat /etc/rust-target); \
    cargo build --release --locked -p inference-server --target "$triple"; \
    install -D -m 0755 "target/$triple/release/inference-server" /out/inference-server

FROM --platform=$BUILDPLATFORM ${DEBIAN_IMAGE} AS install
ARG TARGETARCH
# install.sh needs python3 with pip (pip download of the onnxruntime and openvino wheels for
# TARGETARCH, at the pins of scripts/requirements.txt; zipfile unpacks them) and systemd-sysusers
# (it creates the service's user in the staging root; the image's own user comes from `users`).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3 python3-pip \
        systemd-standalone-sysusers \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# What install.sh reads from the repository, at the same relative paths.
COPY deploy deploy
COPY scripts/requirements.txt scripts/requirements.txt
COPY models/repository/digits-cnn models/repository/digits-cnn
COPY README.md README.md
COPY --from=build /out/inference-server /out/inference-server
# The same script and options as a box install (and CI's tests/deploy/test_install.py); --root
# makes it install the files only and activate nothing.
RUN --mount=type=cache,id=inference-server-pip,target=/root/.cache/pip \
    deploy/install.sh --root /staging --arch "$TARGETARCH" --binary /out/inference-server

FROM --platform=$BUILDPLATFORM ${DEBIAN_IMAGE} AS users
# The user and group the Kubernetes manifests (deploy/k8s/base/daemonset.yaml) run the pod as,
# by number. The passwd and group files are those of the same Debian image as the final stage,
# plus this user, so the final stage needs no RUN (see above). install.sh's sysusers user in
# /staging has a dynamic id; it is not copied.
RUN groupadd --gid 10001 inference-server \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "inference-server daemon" inference-server

FROM ${DEBIAN_IMAGE}
ARG DEBIAN_IMAGE
ARG VERSION
LABEL org.opencontainers.image.title="inference-server" \
      org.opencontainers.image.description="KServe v2 (gRPC and HTTP/REST) inference server for edge accelerators, with ONNX Runtime and OpenVINO" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${DEBIAN_IMAGE}"
COPY --from=users /etc/passwd /etc/group /etc/shadow /etc/gshadow /etc/
# The binary and the runtimes stay root's; the settings and the models are root's too, readable
# by the group 10001 only (install.sh's modes, 0750/0640), as on a box.
COPY --from=install /staging/opt/inference-server /opt/inference-server
COPY --from=install --chown=0:10001 /staging/etc/inference-server /etc/inference-server
COPY --from=install --chown=0:10001 /staging/var/lib/inference-server /var/lib/inference-server
USER 10001:10001
# HTTP/REST, gRPC, Prometheus /metrics: server.toml listens on 0.0.0.0 at these ports.
EXPOSE 8000 8001 8002
# Device telemetry (temperatures, CPU frequency, Raspberry Pi throttling, Coral PCIe) is read from
# /sys and /proc under --telemetry-root (default /). A container sees the host's sysfs read-only,
# so /sys/class/thermal and the cpufreq files are there; /proc/meminfo is the host's. Accelerators
# need their device nodes passed in (--device /dev/apex_0, /dev/bus/usb) and, for the node's
# group, --group-add.
#
# Health: /v2/health/ready on the HTTP port, through bash's /dev/tcp (the image has no curl).
# Docker and compose use this; Kubernetes has its own gRPC and HTTP probes
# (deploy/k8s/base/daemonset.yaml). Loading and warming large models on a Raspberry Pi can take
# minutes, hence the start period.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10m --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8000 && printf 'GET /v2/health/ready HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/opt/inference-server/bin/inference-server"]
CMD ["--config", "/etc/inference-server/server.toml"]
