#!/usr/bin/env bash
# Starts a real Gitea (the release scripts/gitea/build.sh builds, on SQLite) on
# 127.0.0.1 and prints the path of a file to source:
#
#   source "$(scripts/gitea/up.sh)"     # PLUE_GITEA_URL, PLUE_GITEA_TOKEN, PLUE_GITEA_ADMIN,
#                                       # PLUE_GITEA_PASSWORD, PLUE_GITEA_STATE
#   scripts/gitea/down.sh [--purge]     # stops it; --purge also removes the state
#
# The first call writes app.ini (SQLite, installed, no SSH, no mail, no registration,
# offline, webhooks allowed to deliver to loopback and private addresses so that a local
# `plue serve` gets them), migrates the database, creates the admin PLUE_GITEA_ADMIN with a
# random password and an access token with every scope, and starts `gitea web` in a session
# of its own (pid in STATE/run/gitea.pid, logs in STATE/log/). A later call while it runs
# only prints the env file; one after down.sh starts the same instance again.
#
# PLUE_GITEA_STATE (default /tmp/plue-gitea) and PLUE_GITEA_PORT (default 3000) move it.
# Runs as whoever calls it, root included (GITEA_I_AM_BEING_UNSAFE_RUNNING_AS_ROOT).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"
for tool in git curl go; do
  command -v "$tool" >/dev/null || gitea_die "$tool is missing"
done
S="$GITEA_STATE"
env_file="$S/env"
if [[ -n $(gitea_pid) && -f $env_file ]] && gitea_answers; then
  echo "$env_file"; exit 0
fi
[[ -n $(gitea_pid) ]] && gitea_die "a gitea of $S runs (pid $(gitea_pid)) but does not answer on $GITEA_URL; scripts/gitea/down.sh first"
if curl -s -m 2 -o /dev/null "$GITEA_URL/"; then
  gitea_die "something else listens on $GITEA_URL (PLUE_GITEA_PORT picks another port)"
fi

GITEA_BIN="$("$here/build.sh")"
mkdir -p "$S"/{run,log,data,repos,custom}
chmod 0700 "$S"
ini="$S/app.ini"
run() { "$GITEA_BIN" --config "$ini" --work-path "$S" --custom-path "$S/custom" "$@"; }

# ------------------------------------------------------------------ configuration
if [[ ! -f $ini ]]; then
  # Templates and locales come from the module's source (no assets are embedded).
  static="$(cd "$here" && go list -m -f '{{.Dir}}' code.gitea.io/gitea)"
  [[ -d $static/templates && -d $static/options ]] || gitea_die "no templates/options in $static"
  secret_key="$("$GITEA_BIN" generate secret SECRET_KEY)"
  internal_token="$("$GITEA_BIN" generate secret INTERNAL_TOKEN)"
  jwt_secret="$("$GITEA_BIN" generate secret JWT_SECRET)"
  cat >"$ini.partial" <<INI
APP_NAME = plue-gitea
RUN_USER = $(id -un)
RUN_MODE = prod
WORK_PATH = $S

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = $GITEA_PORT
DOMAIN = 127.0.0.1
ROOT_URL = $GITEA_URL/
DISABLE_SSH = true
START_SSH_SERVER = false
OFFLINE_MODE = true
LFS_START_SERVER = false
STATIC_ROOT_PATH = $static
APP_DATA_PATH = $S/data

[database]
DB_TYPE = sqlite3
PATH = $S/data/gitea.db
SQLITE_JOURNAL_MODE = WAL

[repository]
ROOT = $S/repos
DEFAULT_BRANCH = main

[security]
INSTALL_LOCK = true
SECRET_KEY = $secret_key
INTERNAL_TOKEN = $internal_token
PASSWORD_HASH_ALGO = pbkdf2

[oauth2]
JWT_SECRET = $jwt_secret

[service]
DISABLE_REGISTRATION = true
ENABLE_NOTIFY_MAIL = false
DEFAULT_KEEP_EMAIL_PRIVATE = true
NO_REPLY_ADDRESS = noreply.invalid

[mailer]
ENABLED = false

[webhook]
; A local \`plue serve\` is on a loopback address.
ALLOWED_HOST_LIST = loopback,private
DELIVER_TIMEOUT = 10

[actions]
ENABLED = false

[indexer]
ISSUE_INDEXER_TYPE = db
REPO_INDEXER_ENABLED = false

[cron.update_checker]
ENABLED = false

[log]
MODE = file
LEVEL = info
ROOT_PATH = $S/log
INI
  mv "$ini.partial" "$ini"
fi

# ------------------------------------------------------------------ database and admin
run migrate >"$S/log/migrate.out" 2>&1 || { cat "$S/log/migrate.out" >&2; gitea_die "gitea migrate failed"; }
if [[ ! -f $S/admin.token ]]; then
  password="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
  if ! run admin user list --admin 2>/dev/null | awk 'NR > 1 {print $2}' | grep -qx "$GITEA_ADMIN"; then
    run admin user create --username "$GITEA_ADMIN" --password "$password" \
      --email "$GITEA_ADMIN@noreply.invalid" --admin --must-change-password=false >/dev/null
  else
    run admin user change-password --username "$GITEA_ADMIN" --password "$password" \
      --must-change-password=false >/dev/null
  fi
  run admin user generate-access-token --username "$GITEA_ADMIN" \
    --token-name "plue-tests-$(date +%s)" --scopes all --raw |
    # Running as root, gitea says so on stdout before anything else.
    { grep -E '^[0-9a-f]{40}$' || true; } >"$S/admin.token.partial"
  [[ -s $S/admin.token.partial ]] || gitea_die "gitea admin user generate-access-token printed no token"
  printf '%s\n' "$password" >"$S/admin.password"
  mv "$S/admin.token.partial" "$S/admin.token"
fi

# ------------------------------------------------------------------ web server
cd "$S"
setsid "$GITEA_BIN" --config "$ini" --work-path "$S" --custom-path "$S/custom" web \
  </dev/null >>"$S/log/web.out" 2>&1 &
echo $! >"$GITEA_PID_FILE"
for _ in $(seq 600); do
  gitea_answers && break
  [[ -n $(gitea_pid) ]] || { tail -n 30 "$S/log/web.out" >&2; gitea_die "gitea web exited"; }
  sleep 0.1
done
gitea_answers || { tail -n 30 "$S/log/web.out" >&2; gitea_die "gitea web does not answer on $GITEA_URL after 60 s"; }

cat >"$env_file.partial" <<EOF2
export PLUE_GITEA_URL=$GITEA_URL
export PLUE_GITEA_TOKEN=$(cat "$S/admin.token")
export PLUE_GITEA_ADMIN=$GITEA_ADMIN
export PLUE_GITEA_PASSWORD=$(cat "$S/admin.password")
export PLUE_GITEA_STATE=$S
EOF2
mv "$env_file.partial" "$env_file"
gitea_log "gitea $(curl -fsS "$GITEA_URL/api/v1/version" | sed 's/.*"version":"\([^"]*\)".*/\1/') answers on $GITEA_URL"
echo "$env_file"
