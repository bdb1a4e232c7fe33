# syntax=docker/dockerfile:1
# One image for the whole of Plue: `plue serve` (the engine) and `plue runner` (runner pods
# of the Kubernetes pool run it with `command: [plue]`). Build from the repository root:
#
#   docker build -t plue:0.1.0 .
#
# Contracts the chart and the pool rely on (engine/tests/image.rs checks them): `plue` at
# /usr/local/bin (on PATH); uid/gid 65532, non-root; port 8600; the CPython shared library
# the binary links, the python3 that `python` steps run, git and bash; both stages on the
# same Debian release, so the Python the binary was built against is the one it finds.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# .cargo/config.toml points pyo3 at /usr/bin/python3 (Debian's, with its shared library).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p engine --bin plue \
 && install -D -m 0755 target/release/plue /out/plue

FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 libpython3.11 git bash ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 plue \
 && useradd --uid 65532 --gid 65532 --home-dir /home/plue --create-home \
      --shell /usr/sbin/nologin plue \
 && install -d -o 65532 -g 65532 -m 0700 /var/lib/plue \
 && install -d -o 65532 -g 65532 -m 0755 /work
COPY --from=build /out/plue /usr/local/bin/plue
ENV HOME=/home/plue \
    PLUE_LISTEN=0.0.0.0:8600 \
    PLUE_DATA_DIR=/var/lib/plue/data
USER 65532:65532
WORKDIR /home/plue
EXPOSE 8600
ENTRYPOINT ["plue"]
CMD ["serve", "--runners", "0"]
