# The trellis image: one binary that runs as the registry (the default command), a sidecar,
# the gateway or an example service.
#
#   docker build -t trellis .
#   docker run -p 8500:8500 -v trellis-data:/var/lib/trellis trellis
#
# The base images are build arguments: the defaults are the public Rust image and
# distroless/cc (glibc and libgcc, a `nonroot` user, nothing else). Any images with the same
# contents serve; the tests build theirs from Debian packages (tests/deploy/image.sh).
# A context that carries vendored crates and a .cargo/config.toml pointing at them builds
# with no network (`docker build --network=none`).

ARG RUST_IMAGE=docker.io/library/rust:1.95.0-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
# protoc: the etcd client's build compiles etcd's API definitions with it. Installed only when
# the build image lacks it (the public Rust image does; the tests' image has it).
RUN command -v protoc >/dev/null \
    || (apt-get update && apt-get install -y --no-install-recommends protobuf-compiler \
        && rm -rf /var/lib/apt/lists/*)
WORKDIR /src
COPY . .
# The commit `trellis --version` reports; the context has no .git to ask.
ARG TRELLIS_GIT_COMMIT=unknown
ENV TRELLIS_GIT_COMMIT=${TRELLIS_GIT_COMMIT} \
    CARGO_PROFILE_RELEASE_STRIP=symbols
RUN cargo build --release --locked -p trellis-cli --bin trellis \
    && install -D -m 0755 target/release/trellis /out/usr/local/bin/trellis \
    && install -d -m 0750 /out/var/lib/trellis \
    && /out/usr/local/bin/trellis --version

FROM ${RUNTIME_IMAGE}
ARG TRELLIS_GIT_COMMIT=unknown
ARG TRELLIS_VERSION=0.1.0
LABEL org.opencontainers.image.title="trellis" \
      org.opencontainers.image.description="Microservice platform: service registry and discovery (Consul-compatible API, DNS), health checks, sidecar and gateway proxy, two-phase-commit coordinator, tracing, dashboard" \
      org.opencontainers.image.version="${TRELLIS_VERSION}" \
      org.opencontainers.image.revision="${TRELLIS_GIT_COMMIT}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/usr/local/bin/trellis /usr/local/bin/trellis
# A fresh named volume mounted here takes this directory's owner, so the server can write it.
COPY --from=build --chown=65532:65532 /out/var/lib/trellis /var/lib/trellis
USER 65532:65532
WORKDIR /var/lib/trellis
# Registry: HTTP API and dashboard, DNS, OTLP/gRPC and OTLP/HTTP trace receivers.
EXPOSE 8500/tcp 8600/tcp 8600/udp 4317/tcp 4318/tcp
# Gateway listener; sidecar inbound listener.
EXPOSE 8080/tcp 15000/tcp
# `trellis health` GETs $TRELLIS_HEALTH_URL, by default the registry's /v1/status/leader; a
# container running a sidecar, the gateway or an app sets the variable to its own endpoint.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/trellis", "health", "--timeout=4s"]
ENTRYPOINT ["/usr/local/bin/trellis"]
CMD ["server", "--http=0.0.0.0:8500", "--dns=0.0.0.0:8600", "--otlp=0.0.0.0:4318", \
     "--otlp-grpc=0.0.0.0:4317", "--data-dir=/var/lib/trellis"]
