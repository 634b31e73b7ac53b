# syntax=docker/dockerfile:1
# The ledger's executables, credits-api and credits-projector (and credits-admin, the key tool, in both images),
# built from this repository.
#
#   docker build --target api -t credits-api:local .
#   docker build --target projector -t credits-projector:local .
#
# The builder installs the packages of a native build with the native build's own scripts
# (scripts/install-deps.sh --build-only, scripts/build.sh release); the runtime stages hold only the shared
# libraries the executables load, run as an unprivileged user and check their own health. Both take the same
# CREDITS_* variables as a native run (README.md, Configuration). compose/docker-compose.yml runs them.

FROM debian:12.11 AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/
RUN scripts/install-deps.sh --build-only && rm -rf /var/lib/apt/lists/*
COPY . .
RUN scripts/build.sh release credits-api credits-projector credits-admin \
 && install -D -m 0755 build/release/command-api/credits-api /out/credits-api \
 && install -D -m 0755 build/release/admin/credits-admin /out/credits-admin \
 && install -D -m 0755 build/release/projector/credits-projector /out/credits-projector \
 && install -D -m 0755 compose/healthcheck.sh /out/credits-healthcheck

# libc6, libstdc++6 and libgcc-s1 are in the slim base; the rest are the executables' own libraries
# (scripts/test-compose.sh checks this list against what they load).
FROM debian:12.11-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libhiredis0.14 libjemalloc2 libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 librdkafka1 libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 credits \
 && useradd --system --uid 10001 --gid credits --no-create-home --shell /usr/sbin/nologin credits
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
# Listen on every interface of the container; compose publishes only the API's port.
ENV CREDITS_HTTP_ADDRESS=0.0.0.0 \
    CREDITS_PROJECTOR_METRICS_ADDRESS=0.0.0.0

FROM runtime AS projector
EXPOSE 9464
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 CMD ["credits-healthcheck", "projector"]
ENTRYPOINT ["credits-projector"]
CMD ["run"]

FROM runtime AS api
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 CMD ["credits-healthcheck", "api"]
ENTRYPOINT ["credits-api"]
