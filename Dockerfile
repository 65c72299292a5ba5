# The redrive binary in a slim image: `docker build -t redrive .`, then `docker run redrive` (the
# simulated agent) or `docker run -v ./redrive.toml:/etc/redrive.toml -e REDRIVE_CONFIG=/etc/redrive.toml
# redrive run` (your [[handlers]]).
# Used by docker-compose.yml for the fleet replicas.

FROM rust:1.88-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY config ./config
COPY src ./src
# Cache mounts keep the registry and the target directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin redrive \
    && cp target/release/redrive /usr/local/bin/redrive

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home redrive
COPY --from=build /usr/local/bin/redrive /usr/local/bin/redrive
USER redrive
# /metrics, /healthz and /readyz.
ENV REDRIVE_METRICS__LISTEN=0.0.0.0:9464 \
    REDRIVE_LOG__FORMAT=json
EXPOSE 9464
# SIGTERM stops a member gracefully (stop reading, finish running attempts, flush settles).
STOPSIGNAL SIGTERM
ENTRYPOINT ["redrive"]
# `redrive run` needs a config that routes kinds to your agents ([[handlers]]; mount it and set
# REDRIVE_CONFIG, as docker-compose.yml does); without one it refuses to start and says how.
CMD ["run"]
