# syntax=docker/dockerfile:1
#
# mavera-triggers: multi-stage build.
#   build:   official Rust image (Debian bookworm), dependencies cached in BuildKit cache mounts
#   runtime: distroless cc (glibc + libgcc + CA certs, no shell), uid 65532
#
# TLS is rustls (reqwest `rustls-tls`), so no OpenSSL in either stage and no apt.
# The cargo stage is reproduced without Docker by scripts/docker-stage-check.sh;
# keep the two in sync (flags and CARGO_* env).

ARG RUST_VERSION=1.95

############################ build ############################
FROM rust:${RUST_VERSION}-slim-bookworm AS build

ENV CARGO_INCREMENTAL=0 \
    CARGO_NET_RETRY=10 \
    CARGO_TERM_COLOR=never

WORKDIR /src

# The manifest names test and bench targets, so their folders are part of the build context. Registry and
# target dir are BuildKit cache mounts: rebuilds reuse compiled dependencies without stub tricks.
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY config ./config
COPY migrations ./migrations
COPY tests ./tests
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin mavera-triggers \
 && mkdir -p /out/data \
 && cp target/release/mavera-triggers /out/mavera-triggers

########################### runtime ###########################
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime

ENV BIND_ADDR=0.0.0.0 \
    WEBHOOK_PORT=8080 \
    MAVERA_TRIGGERS_CONFIG=/app/config/mavera-triggers.toml \
    DATABASE_URL=sqlite:///app/data/mavera-triggers.db

WORKDIR /app

COPY --from=build /out/mavera-triggers /usr/local/bin/mavera-triggers
COPY --from=build /src/config /app/config
# Empty, nonroot-owned data dir; created before VOLUME so a fresh named volume
# inherits the 65532:65532 ownership.
COPY --from=build --chown=65532:65532 /out/data /app/data

USER 65532:65532
VOLUME ["/app/data"]
EXPOSE 8080

# No shell/curl in distroless: the binary GETs
# http://127.0.0.1:${WEBHOOK_PORT:-8080}/healthz and exits 0/1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/mavera-triggers", "healthcheck"]

ENTRYPOINT ["/usr/local/bin/mavera-triggers"]
CMD ["serve"]
