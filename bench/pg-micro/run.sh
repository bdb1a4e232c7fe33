#!/bin/bash
# PostgreSQL's own CPU per transaction for the statement shapes the engine's transitions
# use, measured on a throw-away server with pgbench (one client, prepared statements): the
# CPU of the server's process tree from /proc, before and after, divided by the
# transactions. What it answers: what a trigger's `WHEN` clause, a `SET LOCAL` or one more
# statement costs the server, apart from the engine and the benchmark's noise.
#
#   bench/pg-micro/run.sh [TRANSACTIONS]   (default 10000 a round, three rounds a case; ≈ 2 minutes)
#
# Needs PostgreSQL's server programs (initdb, pg_ctl, postgres) and pgbench; as root it
# runs the server as the `postgres` user.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tx=${1:-10000}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
[ -x "$bin/initdb" ] || { echo "no PostgreSQL server programs under /usr/lib/postgresql" >&2; exit 1; }
[ -x "$bin/pgbench" ] || { echo "no pgbench in $bin" >&2; exit 1; }
cd /
dir=$(mktemp -d /tmp/plue-pg-micro.XXXXXX)
as_server() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$dir"
trap 'as_server "\"$bin/pg_ctl\" -D \"$dir/data\" -m immediate stop" >/dev/null 2>&1; rm -rf "$dir"' EXIT
port=$((20000 + RANDOM % 20000))
as_server "'$bin/initdb' -D '$dir/data' -U plue --auth=trust >/dev/null"
as_server "'$bin/pg_ctl' -D '$dir/data' -l '$dir/log' -w start \
  -o '-p $port -k $dir -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off' >/dev/null"
psql=("$bin/psql" -q -X -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U plue -d postgres)

# Ticks of CPU (user + system) of the postmaster and every backend, the exited included.
ticks() {
  local pm t c
  pm=$(head -1 "$dir/data/postmaster.pid")
  t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat")
  for c in $(pgrep -P "$pm"); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}

# case LABEL MODE SCRIPT: three rounds of TRANSACTIONS, µs of the server's CPU each.
case_() {
  local label=$1 mode=$2 script=$3 hz before after out=()
  hz=$(getconf CLK_TCK)
  "${psql[@]}" -c "VACUUM ANALYZE"
  for _ in 1 2 3; do
    before=$(ticks)
    "$bin/pgbench" -h "$dir" -p "$port" -U plue -n -M "$mode" -c 1 -t "$tx" -f "$here/$script" postgres >/dev/null
    sleep 0.3
    after=$(ticks)
    out+=("$(( (after - before) * 1000000 / hz / tx ))")
  done
  printf '%-58s %s µs\n' "$label" "${out[*]}"
}

migrations=$here/../../migrations/postgres
"${psql[@]}" -f "$here/schema.sql" >/dev/null
for m in 0011_step_changes 0035_step_changes_unchecked 0037_completion_reads_its_step; do
  "${psql[@]}" -f "$migrations/$m.sql" >/dev/null
done
echo "PostgreSQL's CPU per transaction, three rounds of $tx ($("$bin/postgres" --version))"
case_ "BEGIN; COMMIT (one trip)" simple empty.sql
case_ "BEGIN; two SET LOCALs; COMMIT (one trip)" simple set_local.sql
case_ "BEGIN, four updates of a run's row, COMMIT: six trips" simple runs_trips.sql
case_ "the same six statements in one trip" simple runs_one_trip.sql
case_ "a transition's shape, the trigger with a WHEN (0037)" prepared transition.sql
"${psql[@]}" -f "$migrations/0038_change_list_checks_in_its_function.sql" >/dev/null
case_ "the same, the trigger as migration 0038 left it" prepared transition.sql
"${psql[@]}" -c "DROP TRIGGER step_runs_finished ON step_runs" >/dev/null
case_ "the same, no trigger" prepared transition.sql
