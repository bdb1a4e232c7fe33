#!/usr/bin/env bash
# Stops the Gitea of scripts/gitea/up.sh (SIGTERM to its session, SIGKILL after 10 s) and
# checks that no process of it is left, failing with their pids if one is.
#
#   scripts/gitea/down.sh [--purge]     # --purge also removes PLUE_GITEA_STATE
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"
purge=0; [[ ${1:-} == --purge ]] && purge=1
S="$GITEA_STATE"

pid="$(gitea_pid)"
if [[ -n $pid ]]; then
  # Its session: `gitea web` and the git processes it started.
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null
fi
rm -f "$GITEA_PID_FILE" "$S/env"

# Any process still holding this state's configuration is left behind.
left="$(pgrep -f -- "--config $S/app.ini" | tr '\n' ' ')"
if [[ -n $pid ]] && pgrep -s "$pid" >/dev/null 2>&1; then left+=" $(pgrep -s "$pid" | tr '\n' ' ')"; fi
if [[ -n ${left// /} ]]; then
  gitea_log "left behind after stopping: processes $left"
  exit 1
fi
((purge)) && rm -rf "$S"
gitea_log "gitea stopped; nothing of it left running"
