#!/usr/bin/env bash
# Builds the Gitea release go.mod pins (code.gitea.io/gitea, with SQLite) into a cache
# keyed by the pin and this script, and prints the binary's path. A second call with the
# same pin builds nothing; a cold one takes several minutes on 2 cores.
#
#   scripts/gitea/build.sh           -> prints e.g. ~/.cache/plue-real/gitea-1a2b3c/bin/gitea
#
# PLUE_REAL_CACHE moves the cache (default ~/.cache/plue-real). Needs a C compiler (the
# SQLite driver is cgo). The web front-end's built assets are not part of the module;
# the API, git over HTTP and webhooks, which is what the tests use, do not need them.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${PLUE_REAL_CACHE:-$HOME/.cache/plue-real}"
key="$(cat "$here/build.sh" "$here"/go.{mod,sum} | sha256sum | cut -c1-12)"
out="$cache/gitea-$key"
if [[ -x $out/bin/gitea ]]; then echo "$out/bin/gitea"; exit 0; fi

mkdir -p "$out/bin"
# The release's version, which `gitea --version` and /api/v1/version report.
version="$(sed -n 's#^require code.gitea.io/gitea v\([^ ]*\)$#\1#p' "$here/go.mod")"
# -p 2: this is a 2-core machine and the Rust build may be running beside us.
( cd "$here" && CGO_ENABLED=1 GOFLAGS="-buildvcs=false" go build -p 2 -trimpath \
    -tags 'sqlite sqlite_unlock_notify' -ldflags="-s -w -X main.Version=$version" \
    -o "$out/bin/gitea.partial" code.gitea.io/gitea ) >&2
mv "$out/bin/gitea.partial" "$out/bin/gitea"
echo "$out/bin/gitea"
