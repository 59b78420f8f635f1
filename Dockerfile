# eavlake container image: a static-ish release build on Debian.
FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY vendor vendor
COPY integration-tests integration-tests
RUN cargo build --release --locked --bin eavlake

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/eavlake /usr/local/bin/eavlake
COPY config /etc/eavlake
COPY integration-tests/fixtures /usr/share/eavlake/fixtures
ENTRYPOINT ["eavlake"]
