# Shared by scripts/gitea/{up,down}.sh: where the Gitea lives and how to find its process.
# Sourced, not run.
#
# Everything is on 127.0.0.1: the web server and API on PLUE_GITEA_PORT (default 3000),
# git over HTTP on the same port; no SSH.

GITEA_STATE="${PLUE_GITEA_STATE:-/tmp/plue-gitea}"
GITEA_PORT="${PLUE_GITEA_PORT:-3000}"
GITEA_URL="http://127.0.0.1:$GITEA_PORT"
GITEA_ADMIN=plue-admin
GITEA_PID_FILE="$GITEA_STATE/run/gitea.pid"
# Gitea refuses to run as root unless told it may (it is a throw-away instance here).
export GITEA_I_AM_BEING_UNSAFE_RUNNING_AS_ROOT=true

gitea_log() { printf '%s scripts/gitea: %s\n' "$(date +%T)" "$*" >&2; }
gitea_die() { gitea_log "error: $*"; exit 1; }

# gitea_pid: the running `gitea web` of this state directory, or nothing.
gitea_pid() {
  [[ -f $GITEA_PID_FILE ]] || return 0
  local pid; pid="$(cat "$GITEA_PID_FILE")"
  if kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

# gitea_answers: whether the API answers on GITEA_URL.
gitea_answers() { curl -fsS -m 2 "$GITEA_URL/api/v1/version" >/dev/null 2>&1; }
