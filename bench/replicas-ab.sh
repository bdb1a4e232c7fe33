#!/bin/bash
# Alternates `plue-bench replicas` of two builds, ROUNDS times (default 3), printing each
# run's table rows: the way to compare a change with its baseline on this shared machine,
# where the machine's speed moves more between hours than most changes move the figures.
#
#   bench/replicas-ab.sh OLD/plue-bench NEW/plue-bench [ROUNDS]
#
# Each plue-bench runs the `plue` beside it. Build the baseline in a worktree with its own
# CARGO_TARGET_DIR (a full release build, ≈ 17 minutes on 2 cores).
set -euo pipefail
old=${1:?usage: bench/replicas-ab.sh OLD/plue-bench NEW/plue-bench [ROUNDS]}
new=${2:?usage: bench/replicas-ab.sh OLD/plue-bench NEW/plue-bench [ROUNDS]}
rounds=${3:-3}
for round in $(seq "$rounds"); do
  for bench in "$old" "$new"; do
    echo "== round $round $bench $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)"
    "$bench" replicas 2>/dev/null | grep '^| [12] '
  done
done
