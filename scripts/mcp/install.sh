#!/usr/bin/env bash
# Installs the MCP servers the tests of `llm` steps run, and prints the path of a file to
# source (the PLUE_MCP_* variables):
#
#   source "$(scripts/mcp/install.sh)"
#   node "$PLUE_MCP_EVERYTHING"                  # a stdio server; see the env file
#
# - the npm reference servers @modelcontextprotocol/server-everything and
#   server-filesystem, at the exact versions of package.json, with `npm ci` from
#   package-lock.json (install scripts off);
# - the Python SDK `mcp` (requirements.in) in a virtual environment of /usr/bin/python3,
#   from requirements.txt: wheels only, every one checked against its hash;
# - a copy of testkit/mcp (the hostile and test servers, standard library Python).
#
# Everything goes to PLUE_MCP_DIR (default /var/cache/plue-mcp): a step's processes run
# as an unprivileged user in a room that puts a fresh tmpfs on /tmp (and the other
# shared places of runner/src/rooms.rs), so the servers live where every user can read
# and execute them, and nowhere under a home directory or /tmp. Each part sits in a
# directory named after the hash of its pins and is installed once (a marker file says
# it is complete); running it again installs only what changed, and removes the parts
# older pins left.
#
# Last, every server is started and must answer initialize and tools/list
# (scripts/mcp/smoke.py): as this user, then (as root) as an unprivileged uid with no
# HOME, an empty /tmp and no network, as in a step's room. A server that does not answer
# fails the run.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
DIR="${PLUE_MCP_DIR:-/var/cache/plue-mcp}"
# The uid and gid of the unprivileged check: in the runner's default step range
# (runner/src/step_user.rs), named in no /etc/passwd.
CHECK_UID="${PLUE_MCP_CHECK_UID:-3065535}"

log() { printf '%s scripts/mcp: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v node >/dev/null || die "node is missing (apt-get install nodejs npm)"
command -v npm >/dev/null || die "npm is missing (apt-get install npm)"
[[ -x /usr/bin/python3 ]] || die "/usr/bin/python3 is missing"
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || die "python3-venv is missing (apt-get install python3-venv)"
NODE="$(readlink -f "$(command -v node)")"
node_major="$("$NODE" -p 'process.versions.node.split(".")[0]')"
((node_major >= 18)) || die "node $("$NODE" --version) is too old: the servers need 18 or later"

[[ $DIR == /* ]] || die "PLUE_MCP_DIR must be an absolute path, not $DIR"
for shared in /tmp /var/tmp /dev/shm /dev/mqueue /run/lock /var/lock /var/crash; do
  case "$(readlink -m "$DIR")/" in
    "$shared"/*) die "PLUE_MCP_DIR=$DIR is under $shared, which a step's room replaces with an empty tmpfs" ;;
  esac
done
umask 022
mkdir -p "$DIR"
chmod 0755 "$DIR"
rm -rf "$DIR"/check.* # what an interrupted check below left
# Every directory above must let others through (root's home, for one, does not).
d="$DIR"
while [[ $d != / ]]; do
  perms="$(stat -L -c %A "$d")"
  [[ ${perms:9:1} == [xt] ]] || die "$d is not searchable by other users (mode $perms): set PLUE_MCP_DIR elsewhere"
  d="$(dirname "$d")"
done

# hash FILE...: a short digest of the files' contents.
hash() { cat "$@" | sha256sum | cut -c1-16; }
# fresh NAME KEY: the directory for a part at these pins; prints it. Partial attempts
# and other pins' directories of the part are removed.
fresh() {
  local name=$1 key=$2 old
  for old in "$DIR/$name"-*; do
    [[ -e $old && $old != "$DIR/$name-$key" ]] && rm -rf "$old"
  done
  echo "$DIR/$name-$key"
}
complete() { [[ -f $1/.plue-complete ]]; }

# ---------------------------------------------------------------- npm servers
npm_dir="$(fresh npm "$(hash "$here/package.json" "$here/package-lock.json")")"
if ! complete "$npm_dir"; then
  log "installing the npm reference servers into $npm_dir"
  rm -rf "$npm_dir"
  mkdir -p "$npm_dir"
  cp "$here/package.json" "$here/package-lock.json" "$npm_dir/"
  (cd "$npm_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
  touch "$npm_dir/.plue-complete"
fi
module="$npm_dir/node_modules/@modelcontextprotocol"
EVERYTHING="$module/server-everything/dist/index.js"
FILESYSTEM="$module/server-filesystem/dist/index.js"
[[ -f $EVERYTHING && -f $FILESYSTEM ]] || die "npm ci left no $EVERYTHING or $FILESYSTEM"
version_of() { "$NODE" -p "require('$module/$1/package.json').version"; }
EVERYTHING_VERSION="$(version_of server-everything)"
FILESYSTEM_VERSION="$(version_of server-filesystem)"

# ---------------------------------------------------------------- Python SDK
py_version="$(/usr/bin/python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
py_dir="$(fresh py "$(echo "$py_version" | cat - "$here/requirements.txt" | sha256sum | cut -c1-16)")"
if ! complete "$py_dir"; then
  log "installing the Python MCP SDK (Python $py_version) into $py_dir"
  rm -rf "$py_dir"
  /usr/bin/python3 -m venv "$py_dir"
  "$py_dir/bin/python" -m pip install -q --no-input --disable-pip-version-check \
    --require-hashes --only-binary=:all: --no-deps -r "$here/requirements.txt" >&2
  "$py_dir/bin/python" -m pip check >&2 || die "requirements.txt lacks something mcp needs: run scripts/mcp/lock.sh"
  touch "$py_dir/.plue-complete"
fi
PYTHON="$py_dir/bin/python"
SDK_VERSION="$("$PYTHON" -c 'from importlib.metadata import version; print(version("mcp"))')"

# ---------------------------------------------------------------- test servers
servers_dir="$(fresh servers "$(cd "$root/testkit/mcp" && hash ./*.py)")"
if ! complete "$servers_dir"; then
  log "copying testkit/mcp into $servers_dir"
  rm -rf "$servers_dir"
  mkdir -p "$servers_dir"
  cp "$root"/testkit/mcp/*.py "$servers_dir/"
  # Compiled now: the servers' user cannot write __pycache__ here.
  /usr/bin/python3 -m compileall -q "$servers_dir" >&2
  touch "$servers_dir/.plue-complete"
fi
chmod -R a+rX "$npm_dir" "$py_dir" "$servers_dir"

# ---------------------------------------------------------------- env file
cat >"$DIR/env.tmp" <<EOF
# Written by scripts/mcp/install.sh: the MCP servers the tests of llm steps run.
# Every path is readable and executable by any user.
export PLUE_MCP_DIR=$DIR
# node, and the npm reference servers (stdio: \$PLUE_MCP_NODE \$PLUE_MCP_EVERYTHING).
export PLUE_MCP_NODE=$NODE
export PLUE_MCP_EVERYTHING=$EVERYTHING
export PLUE_MCP_EVERYTHING_VERSION=$EVERYTHING_VERSION
# server-everything over streamable HTTP instead of stdio:
#   PORT=N \$PLUE_MCP_NODE \$PLUE_MCP_EVERYTHING \$PLUE_MCP_EVERYTHING_HTTP_ARGS
# serves http://127.0.0.1:N/mcp (it listens on every address; PORT defaults to 3001).
export PLUE_MCP_EVERYTHING_HTTP_ARGS=streamableHttp
# \$PLUE_MCP_NODE \$PLUE_MCP_FILESYSTEM DIR... (the directories it may touch).
export PLUE_MCP_FILESYSTEM=$FILESYSTEM
export PLUE_MCP_FILESYSTEM_VERSION=$FILESYSTEM_VERSION
# An interpreter that imports mcp (the Python SDK), for \$PLUE_MCP_SERVERS/sdk_server.py.
export PLUE_MCP_PYTHON=$PYTHON
export PLUE_MCP_SDK_VERSION=$SDK_VERSION
# testkit/mcp's servers (friendly.py, poisoned.py, rugpull.py, huge.py, forker.py,
# netprobe.py, http_server.py: /usr/bin/python3; sdk_server.py: \$PLUE_MCP_PYTHON).
export PLUE_MCP_SERVERS=$servers_dir
EOF
mv "$DIR/env.tmp" "$DIR/env"
chmod 0644 "$DIR/env"

# ---------------------------------------------------------------- checks
smoke() { /usr/bin/python3 "$here/smoke.py" --timeout 60 "$@" >/dev/null || die "a server did not answer (above)"; }
check_all() {
  local prefix=("$@") scratch
  scratch="$(mktemp -d "$DIR/check.XXXXXX")"
  chmod 0777 "$scratch"
  smoke --expect echo --call get-sum '{"a":2,"b":3}' -- "${prefix[@]}" "$NODE" "$EVERYTHING"
  smoke --expect list_allowed_directories --call list_allowed_directories '{}' -- \
    "${prefix[@]}" "$NODE" "$FILESYSTEM" "$scratch"
  smoke --call add '{"a":2,"b":3}' --call greet '{"name":"Plue"}' -- "${prefix[@]}" "$PYTHON" "$servers_dir/sdk_server.py"
  smoke --call add '{"a":2,"b":3}' --call whoami '{}' -- "${prefix[@]}" /usr/bin/python3 "$servers_dir/friendly.py"
  smoke --expect notes -- "${prefix[@]}" /usr/bin/python3 "$servers_dir/poisoned.py"
  smoke --expect echo -- "${prefix[@]}" /usr/bin/python3 "$servers_dir/rugpull.py"
  smoke --call huge '{"megabytes":1}' -- "${prefix[@]}" /usr/bin/python3 "$servers_dir/huge.py"
  smoke --call probe '{"name":"localhost"}' -- "${prefix[@]}" /usr/bin/python3 "$servers_dir/netprobe.py" \
    --connect 127.0.0.1:9 --resolve localhost
  smoke --call daemons '{}' -- "${prefix[@]}" /usr/bin/python3 "$servers_dir/forker.py" --dir "$scratch"
  # forker.py's daemon outlives it, as it should: this check ends it.
  local pidfile
  for pidfile in "$scratch"/forker-*; do
    [[ $pidfile == *.beat ]] || kill -KILL "$(cat "$pidfile")" 2>/dev/null || true
  done
  rm -rf "$scratch"
}
log "checking the servers answer initialize and tools/list"
check_all
if [[ $(id -u) == 0 ]]; then
  # As a step's user: an unnamed high uid, no supplementary groups, a fresh /tmp (empty
  # HOME in it), no network but loopback, cwd that HOME.
  room=(unshare --net --mount --propagation private -- /bin/sh -c '
      mount -t tmpfs -o mode=1777,nosuid,nodev plue-mcp-check /tmp &&
      ip link set lo up 2>/dev/null; mkdir /tmp/home && chown "$0:$0" /tmp/home && cd /tmp/home &&
      exec setpriv --reuid="$0" --regid="$0" --clear-groups --inh-caps=-all \
        env -i PATH=/usr/bin:/bin HOME=/tmp/home "$@"' "$CHECK_UID")
  if "${room[@]}" /bin/true 2>/dev/null; then
    log "checking them again as uid $CHECK_UID, without network, HOME or a shared /tmp"
    check_all "${room[@]}"
  else
    log "cannot make a network and mount namespace here: checking as uid $CHECK_UID only"
    check_all setpriv --reuid="$CHECK_UID" --regid="$CHECK_UID" --clear-groups --inh-caps=-all \
      env -i PATH=/usr/bin:/bin HOME=/nonexistent
  fi
else
  log "not root: the servers were not checked as another user"
fi
log "MCP servers ready (server-everything $EVERYTHING_VERSION, server-filesystem $FILESYSTEM_VERSION, mcp $SDK_VERSION)"
echo "$DIR/env"
