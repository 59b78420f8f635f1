# eavlake container image: the profile-guided build (integration-tests/pgo.sh) on Debian.
# PGO takes about twice a release build's time and saves 10-15% of a run's CPU (docs/performance.md).
FROM rust:1.88-bookworm AS build
WORKDIR /src
# llvm-profdata of the toolchain's own LLVM, for pgo.sh.
RUN rustup component add llvm-tools-preview
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY vendor vendor
COPY config config
COPY integration-tests integration-tests
RUN EAVLAKE_CACHE=/cache ./integration-tests/pgo.sh && cp /cache/pgo/release/eavlake /eavlake

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /eavlake /usr/local/bin/eavlake
COPY config /etc/eavlake
COPY integration-tests/fixtures /usr/share/eavlake/fixtures
ENTRYPOINT ["eavlake"]
