# One image for every Pivotal Flow process; the container's command picks the
# role: `pivotal command-api`, `relay`, `projector`, `query-api`, `migrate`.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake pkg-config zlib1g-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p pivotal-cli --bin pivotal

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 pivotal
COPY --from=build /src/target/release/pivotal /usr/local/bin/pivotal
COPY config /etc/pivotal-flow/config
WORKDIR /etc/pivotal-flow
USER 10001
ENTRYPOINT ["/usr/local/bin/pivotal"]
