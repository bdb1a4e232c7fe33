#!/usr/bin/env bash
# Installs the OpenID Connect provider the sign-in tests run (npm's oidc-provider at the
# exact version of package.json, `npm ci` from package-lock.json with install scripts off,
# and server.mjs beside it), and prints the path of a file to source:
#
#   source "$(scripts/oidc/install.sh)"
#   node "$PLUE_OIDC_SERVER" CONFIG.json      # see server.mjs
#
# Everything goes to PLUE_OIDC_DIR (default /var/cache/plue-oidc), in a directory named
# after the hash of the pins, installed once (a marker says it is complete); last, the
# provider is started once and must print its issuer.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${PLUE_OIDC_DIR:-/var/cache/plue-oidc}"

log() { printf '%s scripts/oidc: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v node >/dev/null || die "node is missing (apt-get install nodejs npm)"
command -v npm >/dev/null || die "npm is missing (apt-get install npm)"
node_version="$(node -p 'process.versions.node')"
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>22||(a===22&&b>=12)||(a===20&&b>=19)?0:1)' \
  || die "node $node_version is too old: oidc-provider 9 needs ^20.19, ^22.12 or 23+"
[[ $DIR == /* ]] || die "PLUE_OIDC_DIR must be an absolute path, not $DIR"

pins="$(cat "$here/package.json" "$here/package-lock.json" "$here/server.mjs" | sha256sum | cut -c1-16)"
target="$DIR/$pins"
if [[ ! -f $target/.complete ]]; then
  log "installing oidc-provider into $target"
  umask 022
  mkdir -p "$DIR"
  rm -rf "$target" "$target.partial"
  mkdir -p "$target.partial"
  cp "$here/package.json" "$here/package-lock.json" "$here/server.mjs" "$target.partial/"
  (cd "$target.partial" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2) \
    || die "npm ci failed in $target.partial"
  mv "$target.partial" "$target"
  touch "$target/.complete"
  # Older pins' installs go.
  for old in "$DIR"/*; do
    [[ $old == "$target" || ! -d $old ]] || rm -rf "$old"
  done
fi

# The provider must start and name its issuer.
check="$(mktemp)"
trap 'rm -f "$check"' EXIT
printf '%s' '{"client_id":"check","client_secret":"check-secret","redirect_uris":["http://127.0.0.1:1/cb"],"users":[]}' >"$check"
node "$target/server.mjs" "$check" >"$check.out" 2>/dev/null &
pid=$!
for _ in $(seq 300); do
  [[ -s $check.out ]] && break
  sleep 0.1
done
kill "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
issuer="$(head -n1 "$check.out")"
rm -f "$check.out"
[[ $issuer == *'"issuer":"http://127.0.0.1:'* ]] || die "the provider did not start (it printed: $issuer)"

env_file="$target/env"
printf 'export PLUE_OIDC_SERVER=%q\n' "$target/server.mjs" >"$env_file"
echo "$env_file"
