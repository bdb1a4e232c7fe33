#!/usr/bin/env bash
# Builds the Dockerfile's image without a container engine, as an OCI archive that
# `ctr images import` takes: a Debian base (mmdebstrap: the runtime packages, user and
# directories the Dockerfile's final stage makes; cached, keyed by this file) and a layer
# holding the given `plue` binary. Prints the archive's path.
#
#   scripts/image/build.sh [--binary target/release/plue] [--name docker.io/library/plue:0.1.0]
#
# The binary must link the CPython of Debian bookworm (.cargo/config.toml builds it so).
# PLUE_REAL_CACHE moves the cache (default ~/.cache/plue-real).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
binary="$root/target/release/plue"
[[ -x $binary ]] || binary="$root/target/debug/plue"
name="docker.io/library/plue:$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$root/charts/plue/Chart.yaml")"
while [[ $# -gt 0 ]]; do
  case $1 in
    --binary) binary="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    *) echo "scripts/image/build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x $binary ]] || { echo "scripts/image/build.sh: no plue binary at $binary (cargo build -p engine --bin plue)" >&2; exit 1; }
python=/usr/bin/python3
cache="${PLUE_REAL_CACHE:-$HOME/.cache/plue-real}"
mkdir -p "$cache/images"

# The base: what the Dockerfile's final stage installs and makes, the same Debian release.
base="$cache/images/base-$(sha256sum "$here/build.sh" | cut -c1-12).tar"
if [[ ! -f $base ]]; then
  SOURCE_DATE_EPOCH=0 mmdebstrap --quiet --variant=minbase \
    --include=python3,libpython3.11,git,bash,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='chroot "$1" groupadd --gid 65532 plue' \
    --customize-hook='chroot "$1" useradd --uid 65532 --gid 65532 --home-dir /home/plue --create-home --shell /usr/sbin/nologin plue' \
    --customize-hook='install -d -o 65532 -g 65532 -m 0700 "$1/var/lib/plue"' \
    --customize-hook='install -d -o 65532 -g 65532 -m 0755 "$1/work"' \
    --customize-hook='rm -rf "$1/var/lib/apt/lists/"* "$1/var/cache/apt/"*' \
    --format=tar bookworm "$base.partial" http://deb.debian.org/debian \
    "deb http://deb.debian.org/debian-security bookworm-security main" >&2
  mv "$base.partial" "$base"
  # Bases of an earlier build.sh are not used again: keep the disk for this one.
  find "$cache/images" -maxdepth 1 -name 'base-*.tar' ! -path "$base" -delete
fi

# The binary's layer: usr/local/bin/plue, debug info stripped, owned by root.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
objcopy --strip-debug "$binary" "$work/plue"
out="$cache/images/plue.oci.tar"
"$python" "$here/oci.py" --name "$name" --out "$out" --layer "$base" --file "$work/plue=usr/local/bin/plue" \
  --entrypoint plue --cmd serve --cmd=--runners --cmd 0 \
  --env HOME=/home/plue --env PLUE_LISTEN=0.0.0.0:8600 --env PLUE_DATA_DIR=/var/lib/plue/data \
  --user 65532:65532 --workdir /home/plue --port 8600
